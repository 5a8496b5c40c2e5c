"""Focused crops (InstSynth): a 2:1 window around one instance, resized back to the image's
size, with its labels transformed exactly as its pixels.

The window's area is lambda x the instance's box area, lambda ~ N(3, 1) clipped at >= 1,
placed at random so that it holds the box where it can. It is drawn again (a bounded number
of times) while an instance it cuts keeps fewer than ``min_pixels`` pixels; after the last
draw such instances are dropped and counted.
"""

from __future__ import annotations

import cv2
import numpy as np

from synthscene.records import Instances, Sample

ASPECT = 2.0  # width / height
MIN_PIXELS = 4  # an instance the crop keeps must keep this many pixels (at the output size)


def focused_window(xyxy, masks: np.ndarray, rng: np.random.Generator, aspect: float = ASPECT,
                   lam: tuple[float, float] = (3.0, 1.0), draws: int = 20,
                   min_pixels: int = MIN_PIXELS) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a window around the box ``xyxy`` in an image the size of ``masks``
    ([N, H, W], every instance of the image)."""
    height, width = masks.shape[1:]
    bx1, by1, bx2, by2 = (float(v) for v in xyxy)
    box_area = max(1.0, (bx2 - bx1) * (by2 - by1))
    window = (0, 0, width, height)
    for _ in range(max(1, draws)):
        area = max(1.0, rng.normal(*lam)) * box_area
        crop_h = max(1, int(round(min(float(height), width / aspect, (area / aspect) ** 0.5))))
        crop_w = max(1, min(width, int(round(aspect * crop_h))))
        # hold the box where the window is large enough, else centre on it
        x0 = _start(bx1, bx2, crop_w, width, rng)
        y0 = _start(by1, by2, crop_h, height, rng)
        window = (x0, y0, x0 + crop_w, y0 + crop_h)
        if all(_kept_pixels(mask, window, (width, height)) >= min_pixels or not mask.any() or
               not mask[y0:y0 + crop_h, x0:x0 + crop_w].any() for mask in masks):
            break
    return window


def _start(low: float, high: float, side: int, limit: int, rng: np.random.Generator) -> int:
    first, last = int(np.ceil(high)) - side, int(np.floor(low))  # starts that hold [low, high)
    first, last = max(0, first), min(limit - side, last)
    if first > last:  # the box is larger than the window: centre it
        return int(np.clip(round((low + high - side) / 2), 0, limit - side))
    return int(rng.integers(first, last + 1))


def _kept_pixels(mask: np.ndarray, window, size) -> int:
    x0, y0, x1, y1 = window
    return int(resize_nearest(mask[y0:y1, x0:x1].astype(np.uint8), size).sum())


def resize_nearest(image: np.ndarray, size) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)


def resize_rgb(image: np.ndarray, size) -> np.ndarray:
    """Area filtering when shrinking, bicubic when growing (never nearest: it aliases)."""
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def crop_sample(sample: Sample, window, min_pixels: int = MIN_PIXELS) -> Sample:
    """The sample seen through ``window``, resized back to its own size: RGB filtered, the
    semantic mask and instance masks nearest; instances keeping fewer than ``min_pixels``
    pixels are dropped (``dropped["focused_crop"]``). ``extra["focused_crop"]`` = window."""
    x0, y0, x1, y1 = window
    size = (sample.width, sample.height)
    image = resize_rgb(sample.image[y0:y1, x0:x1], size)
    semantic = None if sample.semantic is None else resize_nearest(sample.semantic[y0:y1, x0:x1], size)
    instances = sample.instances
    if instances.has_masks and len(instances):
        masks = np.stack([resize_nearest(m[y0:y1, x0:x1].astype(np.uint8), size) > 0 for m in instances.masks])
        keep = masks.reshape(len(masks), -1).sum(axis=1) >= min_pixels
        in_view = instances.masks[:, y0:y1, x0:x1].reshape(len(masks), -1).any(axis=1)
        dropped = int((in_view & ~keep).sum())  # cut to a sliver (those out of view are not counted)
        instances = Instances.from_masks(masks[keep], instances.class_id[keep], instances.score[keep],
                                         {k: v[keep] for k, v in instances.data.items()})
    else:
        dropped = 0
    return Sample(sample.index, sample.seed, sample.caption, image, instances, semantic, sample.class_ids,
                  {**sample.dropped, "focused_crop": dropped}, {**sample.extra, "focused_crop": list(window)})
