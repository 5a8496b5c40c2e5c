"""VOC-style semantic masks: palette ('P' mode) PNGs, 0 background, 1..C classes, 255 ignore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened); index 255 is (224, 224, 192)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def save_semantic_png(semantic: np.ndarray, path: str | Path) -> None:
    """Write uint8 [H, W] class indices as a palette PNG (the indices are the pixel values)."""
    if semantic.dtype != np.uint8 or semantic.ndim != 2:
        raise ValueError(f"semantic mask must be uint8 [H, W], got {semantic.dtype} {semantic.shape}")
    image = Image.fromarray(semantic, mode="P")
    image.putpalette(_PALETTE)
    image.save(path)


def load_semantic_png(path: str | Path) -> np.ndarray:
    """uint8 [H, W] class indices of a palette PNG (not its colours)."""
    with Image.open(path) as image:
        if image.mode != "P" and image.mode != "L":
            raise ValueError(f"{path}: expected a palette or greyscale PNG, got mode {image.mode}")
        return np.array(image)
