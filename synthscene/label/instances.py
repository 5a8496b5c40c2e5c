"""Instances from a semantic mask: connected components per class, with a score each."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from synthscene.records import Instances


@dataclass
class Labels:
    """What a recipe reads from one image: semantic mask (uint8 [H, W], 255 uncertain; None
    for box-only recipes), instances, how many candidates each filter dropped and, where a
    not-drawn check ran, what it measured per named class ({class id: ``ClassEvidence``})."""

    semantic: np.ndarray | None
    instances: Instances
    dropped: dict[str, int] = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)


def instances_from_semantic(semantic: np.ndarray, scores: np.ndarray | None = None, min_area: int = 1,
                            num_classes: int | None = None) -> tuple[Instances, int]:
    """Split each class of a semantic mask into 8-connected components.

    Args:
        semantic: uint8 [H, W], 0 background, 1..C classes, 255 ignore (never an instance).
        scores: optional float [C, H, W] class scores; an instance's score is the mean
            score of its class over its pixels (1.0 when not given).
        min_area: components with fewer pixels are dropped (and counted).
        num_classes: C; default: the largest label present.
    Returns:
        (instances with 0-based class ids and tight xyxy boxes, number of components
        dropped for being smaller than ``min_area``). A ring stays one instance (its
        hole is background); a component touching the border is kept as it is.
    """
    if semantic.ndim != 2:
        raise ValueError(f"semantic mask must be [H, W], got shape {semantic.shape}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    labels = [int(v) for v in np.unique(semantic) if 0 < v != 255]
    if num_classes is not None and labels and labels[-1] > num_classes:
        raise ValueError(f"semantic mask has label {labels[-1]} but only {num_classes} classes")
    masks, class_ids, instance_scores, dropped = [], [], [], 0
    for label in labels:
        count, components = cv2.connectedComponents((semantic == label).astype(np.uint8), connectivity=8)
        for k in range(1, count):
            mask = components == k
            if mask.sum() < min_area:
                dropped += 1
                continue
            masks.append(mask)
            class_ids.append(label - 1)
            instance_scores.append(float(scores[label - 1][mask].mean()) if scores is not None else 1.0)
    if not masks:
        return Instances.empty(*semantic.shape), dropped
    return Instances.from_masks(np.stack(masks), class_ids, instance_scores), dropped
