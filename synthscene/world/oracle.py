"""An oracle that labels any image of the shapes world per pixel, from colour alone.

Every class owns a colour family (a hue range, strongly saturated); background and
clutter are weakly saturated. So a pixel's class is the nearest family hue when it is
saturated and bright enough, else background. On real world images this is exact up to
rounding; on generated images it is the reference that labels are scored against.
"""

from __future__ import annotations

import cv2
import numpy as np

from synthscene.world.classes import (
    BACKGROUND_MAX_SATURATION,
    CLASSES,
    OBJECT_MIN_SATURATION,
    OBJECT_MIN_VALUE,
    PART_VALUE_RANGES,
    part_ids,
)

SATURATION_SPLIT = (OBJECT_MIN_SATURATION + BACKGROUND_MAX_SATURATION) / 2
VALUE_SPLIT = OBJECT_MIN_VALUE * 0.75
# halfway between the dark part's brightest and the light part's darkest value
PART_VALUE_SPLIT = (PART_VALUE_RANGES[0][0] + PART_VALUE_RANGES[1][1]) / 2
_HUES = np.array([c.hue for c in CLASSES], np.float32)


def oracle_semantic(image: np.ndarray) -> np.ndarray:
    """Label an image of the shapes world.

    Args:
        image: uint8 [H, W, 3] RGB.
    Returns:
        uint8 [H, W]: 0 background, class id + 1 for class pixels.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"oracle expects a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    distance = np.abs(hue[..., None] - _HUES)
    distance = np.minimum(distance, 360.0 - distance)  # hue is circular
    labels = distance.argmin(axis=-1).astype(np.uint8) + 1
    labels[(sat < SATURATION_SPLIT) | (val < VALUE_SPLIT)] = 0
    return labels


def oracle_parts(image: np.ndarray, semantic: np.ndarray | None = None) -> np.ndarray:
    """The parts of a world image's part-aware objects, read from their brightness.

    Args:
        image: uint8 [H, W, 3] RGB.
        semantic: its oracle labels, when already computed.
    Returns:
        uint8 [H, W]: 0 no part, else 1 + an index into ``classes.PARTS``.
    """
    semantic = oracle_semantic(image) if semantic is None else semantic
    bright = image.max(axis=2) >= PART_VALUE_SPLIT * 255  # HSV value is the largest channel
    parts = np.zeros(semantic.shape, np.uint8)
    for class_id in range(len(CLASSES)):
        ids = part_ids(class_id)
        if ids:
            inside = semantic == class_id + 1
            parts[inside & bright] = ids[0]
            parts[inside & ~bright] = ids[1]
    return parts


def present_classes(semantic: np.ndarray, min_fraction: float = 0.008) -> set[int]:
    """Class ids (0-based) that cover at least ``min_fraction`` of a semantic mask."""
    counts = np.bincount(semantic.ravel(), minlength=len(CLASSES) + 1)[1 : len(CLASSES) + 1]
    return {i for i, c in enumerate(counts) if c >= min_fraction * semantic.size}


def oracle_instances(image: np.ndarray, min_area: int = 4):
    """The oracle's instances of an image: per class, the 8-connected components of its
    pixels with at least ``min_area`` of them (touching objects of one class merge).

    Returns:
        ``Instances`` with masks, class ids 0-based into ``CLASSES``, score 1.
    """
    from synthscene.records import Instances

    semantic = oracle_semantic(image)
    masks, class_ids = [], []
    for class_index in range(len(CLASSES)):
        count, components = cv2.connectedComponents((semantic == class_index + 1).astype(np.uint8), connectivity=8)
        for component in range(1, count):
            mask = components == component
            if mask.sum() >= min_area:
                masks.append(mask)
                class_ids.append(class_index)
    if not masks:
        return Instances.empty(*image.shape[:2])
    return Instances.from_masks(np.stack(masks), np.array(class_ids, np.int64))
