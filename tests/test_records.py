"""Instances and Sample: optional masks, per-instance data, filtering."""

import numpy as np
import pytest

from synthscene.records import Instances, masks_to_xyxy


def _masks():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 4, 7] = True
    masks[2, 0:6, 0:2] = True
    return masks


def test_box_only_instances_are_valid_and_have_box_areas():
    instances = Instances.from_boxes([[0, 0, 4, 2], [1, 1, 2.5, 3]], [0, 2], data={"iscrowd": np.array([0, 1])})
    assert instances.masks is None and not instances.has_masks
    assert instances.area.tolist() == [8, 3]
    kept = instances[instances.data["iscrowd"] == 0]
    assert len(kept) == 1 and kept.class_id.tolist() == [0] and kept.masks is None
    assert Instances.empty().masks is None and Instances.empty(4, 5).masks.shape == (0, 4, 5)
    assert Instances.empty(4, 5).area.tolist() == []


def test_filtering_keeps_every_field_and_data_array_aligned():
    instances = Instances.from_masks(_masks(), [1, 0, 1], [0.5, 0.9, 0.7], data={"margin": np.array([1.0, 2.0, 3.0])})
    assert instances.xyxy.tolist() == [[1, 1, 4, 3], [7, 4, 8, 5], [0, 0, 2, 6]]
    subset = instances[np.array([2, 0])]
    assert subset.class_id.tolist() == [1, 1] and subset.data["margin"].tolist() == [3.0, 1.0]
    assert np.array_equal(subset.masks[1], _masks()[0]) and subset.area.tolist() == [12, 6]
    assert len(instances[1:]) == 2


def test_disagreeing_fields_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="masks"):
        Instances(np.zeros((2, 4), np.float32), np.zeros(2, np.int64), np.ones(2, np.float32), np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match=r"data\['margin'\]"):
        Instances.from_boxes(np.zeros((2, 4)), [0, 1], data={"margin": np.zeros(3)})


def test_tight_boxes_are_exclusive_at_the_far_side():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 2, 3] = True
    assert masks_to_xyxy(masks).tolist() == [[3, 2, 4, 3], [0, 0, 0, 0]]
