import numpy as np
import pytest

from synthscene.label.instances import instances_from_semantic


def _semantic(size=8):
    return np.zeros((size, size), np.uint8)


def test_empty_mask_gives_no_instances():
    instances, dropped = instances_from_semantic(_semantic())
    assert len(instances) == 0 and instances.masks.shape == (0, 8, 8) and dropped == 0


def test_one_pixel_instance_and_min_area():
    semantic = _semantic()
    semantic[3, 4] = 2
    instances, _ = instances_from_semantic(semantic)
    assert instances.class_id.tolist() == [1]
    assert instances.xyxy.tolist() == [[4, 3, 5, 4]]
    instances, dropped = instances_from_semantic(semantic, min_area=2)
    assert len(instances) == 0 and dropped == 1


def test_mask_with_hole_stays_one_instance():
    semantic = _semantic()
    semantic[1:6, 1:6] = 1
    semantic[3, 3] = 0
    instances, _ = instances_from_semantic(semantic)
    assert len(instances) == 1 and instances.area.tolist() == [24]
    assert not instances.masks[0, 3, 3]


def test_touching_border_and_two_components_of_one_class():
    semantic = _semantic()
    semantic[0:2, 0:3] = 1
    semantic[6:8, 5:8] = 1
    semantic[4, 4] = 255  # ignore is never an instance
    scores = np.zeros((1, 8, 8), np.float32)
    scores[0, 0:2, 0:3] = 0.8
    instances, _ = instances_from_semantic(semantic, scores=scores)
    assert sorted(instances.xyxy.tolist()) == [[0, 0, 3, 2], [5, 6, 8, 8]]
    assert np.allclose(sorted(instances.score), [0.0, 0.8])


def test_bad_inputs():
    with pytest.raises(ValueError, match="min_area"):
        instances_from_semantic(_semantic(), min_area=0)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        instances_from_semantic(np.zeros((2, 2, 2), np.uint8))
    semantic = _semantic()
    semantic[0, 0] = 9
    with pytest.raises(ValueError, match="only 6 classes"):
        instances_from_semantic(semantic, num_classes=6)
