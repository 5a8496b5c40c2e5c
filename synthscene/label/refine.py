"""Edge-aware refinement of a coarse objectness map against the image.

Attention maps are 8-16x coarser than the image, so their edges are blurred. GrabCut
(opencv) fits colour models to the pixels the map is sure about and cuts along image
edges for the rest. (MosaicFusion uses the fast bilateral solver for this step; the
opencv-contrib wheels on PyPI are built without Eigen, which that filter needs.)
"""

from __future__ import annotations

import cv2
import numpy as np


def grabcut_foreground(image: np.ndarray, objectness: np.ndarray, threshold: float = 0.5,
                       background_below: float = 0.4, foreground_above: float = 0.95,
                       iterations: int = 3) -> np.ndarray:
    """Foreground mask of an image from an objectness map in [0, 1] at image resolution.

    Pixels below ``background_below`` are fixed background, those at or above
    ``foreground_above`` fixed foreground, and the rest start as probable foreground
    (>= ``threshold``) or probable background, for GrabCut to settle.

    Args:
        image: uint8 [H, W, 3] RGB.
        objectness: float [H, W] in [0, 1].
    Returns:
        bool [H, W].
    """
    if image.shape[:2] != objectness.shape or image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"need a uint8 RGB image and a map of the same size, got {image.shape} and {objectness.shape}")
    if not 0.0 <= background_below <= threshold <= foreground_above:
        raise ValueError(f"need background_below <= threshold <= foreground_above, got "
                         f"{background_below}, {threshold}, {foreground_above}")
    thresholded = objectness >= threshold
    mask = np.where(thresholded, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[objectness < background_below] = cv2.GC_BGD
    mask[objectness >= foreground_above] = cv2.GC_FGD
    foreground = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if iterations == 0 or foreground.all() or not foreground.any():
        return thresholded  # GrabCut needs samples of both sides to fit its colour models
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, None, background_model, foreground_model,
                iterations, cv2.GC_INIT_WITH_MASK)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
