import numpy as np

from synthscene.label.crops import crop_sample, focused_window
from synthscene.records import Instances, Sample


def _sample(height=40, width=80):
    rng = np.random.default_rng(0)
    masks = np.zeros((3, height, width), bool)
    masks[0, 10:20, 30:44] = True  # the instance the crop is around
    masks[1, 12:30, 60:79] = True  # a neighbour
    masks[2, 0:2, 0:2] = True  # a speck in a corner
    semantic = np.zeros((height, width), np.uint8)
    for k, mask in enumerate(masks):
        semantic[mask] = k + 1
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Sample(0, 0, "", image, Instances.from_masks(masks, [0, 1, 2], data={"instance_id": np.array([5, 6, 7])}),
                  semantic)


def test_window_is_two_to_one_inside_the_image_around_the_box_and_reproducible():
    sample = _sample()
    box = sample.instances.xyxy[0]
    for seed in range(20):
        x0, y0, x1, y1 = focused_window(box, sample.instances.masks, np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 40
        assert abs((x1 - x0) / (y1 - y0) - 2.0) < 0.1
        assert x0 <= (box[0] + box[2]) / 2 <= x1 and y0 <= (box[1] + box[3]) / 2 <= y1
        if x1 - x0 >= box[2] - box[0] and y1 - y0 >= box[3] - box[1]:  # large enough: it holds the box
            assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]
        assert (x1 - x0) * (y1 - y0) >= 0.8 * (box[2] - box[0]) * (box[3] - box[1])  # lambda >= 1
    assert focused_window(box, sample.instances.masks, np.random.default_rng(3)) == \
        focused_window(box, sample.instances.masks, np.random.default_rng(3))


def test_crop_transforms_labels_as_pixels_and_counts_slivers():
    sample = _sample()
    cropped = crop_sample(sample, (24, 8, 64, 28), min_pixels=4)
    assert cropped.image.shape == sample.image.shape and cropped.semantic.shape == sample.semantic.shape
    # the speck is out of view (not counted); the neighbour keeps a strip, the main instance all of it
    assert cropped.instances.data["instance_id"].tolist() == [5, 6]
    assert cropped.dropped["focused_crop"] == 0 and cropped.extra["focused_crop"] == [24, 8, 64, 28]
    for mask, class_id in zip(cropped.instances.masks, cropped.instances.class_id):
        assert (cropped.semantic[mask] == class_id + 1).all()  # nearest: labels stay aligned
    sliver = crop_sample(sample, (60, 0, 62, 13), min_pixels=4000)
    assert sliver.dropped["focused_crop"] == 1 and len(sliver.instances) == 0


def test_window_draws_are_bounded_when_no_window_keeps_every_instance():
    masks = np.zeros((2, 20, 40), bool)
    masks[0, 5:10, 10:20] = True
    masks[1] = np.eye(20, 40, dtype=bool)  # a hair-thin diagonal any window cuts
    window = focused_window((10, 5, 20, 10), masks, np.random.default_rng(0), draws=5, min_pixels=10_000)
    x0, y0, x1, y1 = window
    assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 20
