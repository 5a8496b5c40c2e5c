"""MosaicFusion's labels as pure functions: per-region objectness -> instances.

Each region's objectness (its prompt's cross-attention to its object tokens, finest
resolution, later steps) is thresholded by Otsu, cut by GrabCut against the image, its
edges re-decided by colour (the matte text2labels uses) and split into connected
components within the area bounds. Every pixel belongs to the
region whose weight is largest there, so instances never overlap in the bands between
regions. What each filter removed is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch.nn.functional as F

from synthscene.codecs import IGNORE_INDEX
from synthscene.label.attention_maps import objectness_map
from synthscene.label.classify import ClassEvidence
from synthscene.label.instances import Labels
from synthscene.label.refine import grabcut_foreground, matte_regions
from synthscene.records import Instances


@dataclass(frozen=True)
class RegionInstance:
    """One instance a region gave: its mask at image resolution and its check scores."""

    mask: np.ndarray  # bool [H, W]
    score: float  # mean objectness
    attention_agreement: float  # fraction of its pixels above the region's Otsu threshold (before GrabCut)
    class_gain: float  # the region's not-drawn statistic (NaN when that check is off)
    context_margin: float = float("nan")  # its in-context rival margin (NaN when not asked or no rival)


def region_objectness(cross: dict, object_tokens: list[int], layout) -> np.ndarray:
    """float [H, W] in [0, 1] on a region's window at image resolution, from its captured
    maps ``cross`` {(h, w): [T, h, w]} and the prompt's object tokens (``objectness_tokens``)."""
    finest = max(cross)
    objectness = objectness_map({finest: cross[finest]}, object_tokens)
    size = (layout.window[0] * layout.vae_factor, layout.window[1] * layout.vae_factor)
    objectness = F.interpolate(objectness[None, None], size=size, mode="bicubic", align_corners=False)[0, 0]
    return objectness.clamp(0, 1).numpy()


def region_instances(image: np.ndarray, objectness: list[np.ndarray], layout, params,
                     dropped: dict[str, int] | None = None,
                     class_errors: list[np.ndarray] | None = None) -> list[list[RegionInstance]]:
    """For each region, its instances (``RegionInstance``: mask at image resolution, mean
    objectness, check scores). A region's instances are the connected components of its refined
    foreground within the area bounds, kept only if, with ``class_errors`` (per region
    [2 + R, H, W] on its window: the classifier's errors under its prompt, under its prompt
    with the class cut out and with each of R rival words in its place), the class lowers
    the error on them together by ``params.min_class_gain`` and every rival in its place
    raises it by ``params.min_context_margin`` (``classify.ClassEvidence``); ``strict``
    (MosaicFusion) accepts a region only when that is exactly one component, otherwise a
    region may give several (the model drew more than one object of its class) and gives
    none when no component fits. ``dropped`` (updated in place) counts components too
    small / too large / not drawn and regions refused by ``strict``."""
    dropped = {} if dropped is None else dropped
    for key in ("small", "large", "not_drawn", "strict_regions"):
        dropped.setdefault(key, 0)
    factor = layout.vae_factor
    owners = layout.owners()
    regions = []
    for k, ((y0, y1, x0, x1), (wy, wx)) in enumerate(zip(layout.cells, layout.windows)):
        # the cell, in window and in canvas coordinates (image pixels)
        cy0, cy1, cx0, cx1 = (v * factor for v in (y0, y1, x0, x1))
        oy, ox = wy * factor, wx * factor
        cell = objectness[k][cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
        threshold, _ = cv2.threshold((cell * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = threshold / 255.0
        crop = image[cy0:cy1, cx0:cx1]
        foreground = grabcut_foreground(crop, cell, threshold, min(params.grabcut_background_below, threshold),
                                        max(params.grabcut_foreground_above, threshold), params.grabcut_iterations,
                                        params.grabcut_min_side)
        if params.matting_colours > 0:
            foreground = matte_regions(crop, foreground, params.matting_colours)
        foreground &= owners[cy0:cy1, cx0:cx1] == k
        count, components = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
        low, high = params.area_range
        areas = [(components == c).sum() for c in range(1, count)]
        dropped["small"] += int(sum(a < low * cell.size for a in areas))
        dropped["large"] += int(sum(a > high * cell.size for a in areas))
        valid = [c for c, a in zip(range(1, count), areas) if low * cell.size <= a <= high * cell.size]
        gain = context = float("nan")
        if class_errors is not None and valid:
            # drawn or not is asked of the region's class once, over all its components
            with_class, without, *in_context = class_errors[k][:, cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
            pixels = np.isin(components, valid)
            caption = with_class[pixels].mean()
            gain = float(1.0 - caption / without[pixels].mean())
            if in_context:
                context = float(1.0 - caption / min(rival[pixels].mean() for rival in in_context))
            evidence = ClassEvidence(gain, context_margin=None if np.isnan(context) else context)
            if not evidence.drawn(params.min_class_gain, min_context_margin=params.min_context_margin):
                dropped["not_drawn"] += len(valid)
                valid = []
        if params.strict and len(valid) != 1:
            dropped["strict_regions"] += 1
            valid = []
        instances = []
        for c in valid:
            full = np.zeros(image.shape[:2], bool)
            full[cy0:cy1, cx0:cx1] = components == c
            inside = cell[components == c]
            instances.append(RegionInstance(full, float(inside.mean()), float((inside >= threshold).mean()), gain,
                                            context))
        regions.append(instances)
    return regions


def mosaic_labels(image: np.ndarray, objectness: list[np.ndarray], layout, class_ids, params,
                  sam=None, class_errors: list[np.ndarray] | None = None) -> tuple[Labels | None, list[bool]]:
    """(labels, which regions gave an instance) of one mosaic; labels are None when
    ``strict`` drops the image. ``sam``: an optional ``SamRefiner`` whose box-prompted
    masks replace the instances' (within their region); ``class_errors``: for the
    not-drawn check (see ``region_instances``)."""
    dropped: dict[str, int] = {}
    regions = region_instances(image, objectness, layout, params, dropped, class_errors)
    kept = [bool(instances) for instances in regions]
    if params.strict and not all(kept):
        return None, kept
    owners = layout.owners()
    if sam is not None:
        for k, instances in enumerate(regions):
            if instances:
                refined = sam(image, np.stack([i.mask for i in instances])) & (owners == k)
                regions[k] = [replace(i, mask=r) if r.any() else i for r, i in zip(refined, instances)]
    semantic = np.zeros(image.shape[:2], np.uint8)
    found, classes = [], []
    for k, instances in enumerate(regions):
        if not instances:
            semantic[owners == k] = IGNORE_INDEX  # unknown: this region gave no clean instance
        for instance in instances:
            semantic[instance.mask] = class_ids[k] + 1
            found.append(instance)
            classes.append(class_ids[k])
    if found:
        instances = Instances.from_masks(np.stack([i.mask for i in found]), classes, [i.score for i in found], {
            "attention_agreement": np.array([i.attention_agreement for i in found], np.float32),
            "class_gain": np.array([i.class_gain for i in found], np.float32),
            "context_margin": np.array([i.context_margin for i in found], np.float32)})
    else:
        instances = Instances.empty(*semantic.shape)
    return Labels(semantic, instances, dropped), kept



