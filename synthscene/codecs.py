"""Low-level label codecs shared by the store and every format: COCO RLE and polygons,
VOC palette PNGs, and the ignore index. Nothing here knows about runs or formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

IGNORE_INDEX = 255  # semantic masks: pixels nobody should be scored or trained on


# ---- COCO masks -----------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of one bool [H, W] mask, ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    """bool [H, W] from a COCO RLE (compressed with str or bytes counts, or uncompressed)."""
    if isinstance(rle["counts"], list):  # uncompressed RLE, as COCO stores crowd regions
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """bool [H, W] from any COCO ``segmentation``: a list of polygons (flat x, y lists),
    an uncompressed RLE or a compressed RLE."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points has no area
        if not polygons:
            return np.zeros((height, width), bool)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(f"mask of size {segmentation['size']} on a {height}x{width} image")
        return rle_to_mask(segmentation)
    raise ValueError(f"unknown COCO segmentation of type {type(segmentation).__name__}")


# ---- VOC palette PNGs -----------------------------------------------------------------


def json_value(value):
    """A per-instance value (numpy scalar or array) as JSON; NaN, a score its check did not
    compute, becomes null."""
    value = np.asarray(value).tolist()
    return None if isinstance(value, float) and value != value else value


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


# ---- image files ----------------------------------------------------------------------


class UndecodableImageError(ValueError):
    """An image file that is missing, truncated or not an image."""


def check_image_decodes(path: str | Path) -> None:
    """Decode ``path`` fully (``verify`` alone misses a truncated PNG or JPEG), so a bad
    file is refused by name before training starts rather than crashing a run mid-way."""
    path = Path(path)
    if not path.is_file():
        raise UndecodableImageError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UndecodableImageError(f"image {path} is corrupt or not an image ({err})") from None
