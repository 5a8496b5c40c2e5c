"""Sampled layouts: real instance shapes placed at random positions, sizes and counts.

A shape pool holds instance masks (cut to their boxes) of a dataset with their classes and,
where the dataset has them, their part maps. A placement puts pool shape ``shape`` with
its longer side ``side`` pixels at top-left ``(x, y)``; shapes are drawn in order, later
ones covering earlier ones. ``place_objects`` keeps a placement only when every object
drawn so far keeps at least ``min_visible`` of its pixels (and ``min_area`` pixels), as the
shapes world places its objects, so every object of a sampled layout is really visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from synthscene.layout.maps import Layout
from synthscene.records import Instances


@dataclass(frozen=True)
class PoolShape:
    class_id: int
    mask: np.ndarray  # bool [h, w], cut to its box
    parts: np.ndarray | None  # uint8 [h, w] global part ids, or None


@dataclass(frozen=True)
class Placement:
    shape: int  # index into the pool
    side: int  # the shape's longer side, pixels
    x: int
    y: int

    def to_json(self) -> list[int]:
        return [self.shape, self.side, self.x, self.y]

    @classmethod
    def from_json(cls, row) -> Placement:
        return cls(*(int(v) for v in row))


def shape_pool(source, class_ids: set[int], max_images: int, parts_of=None, whole_only: bool = False
               ) -> list[PoolShape]:
    """The instance shapes of ``class_ids`` in the first ``max_images`` images of a source
    (anything with ``len``, ``instances(i)``); ``parts_of(i)`` gives image i's part map.
    ``whole_only``: only shapes that are whole (``is_whole``)."""
    pool = []
    for index in range(min(max_images, len(source))):
        instances = source.instances(index)
        if instances.masks is None:
            continue
        part_map = None
        for k, class_id in enumerate(instances.class_id):
            mask = instances.masks[k]
            if int(class_id) not in class_ids or not mask.any() or (whole_only and not is_whole(instances.masks, k)):
                continue
            if part_map is None and parts_of is not None:
                part_map = parts_of(index)
            ys, xs = np.nonzero(mask)
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            parts = None if part_map is None else np.where(mask, part_map, 0)[box].astype(np.uint8)
            pool.append(PoolShape(int(class_id), mask[box], parts))
    return pool


def is_whole(masks: np.ndarray, k: int) -> bool:
    """Instance ``k`` touches neither another instance nor the image border, so nothing
    covers or cuts its visible shape: rearranged, a covered or cut shape would be a new one."""
    mask = masks[k]
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return False
    others = np.delete(masks, k, axis=0).any(0)
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return not (grown & others).any()


def scaled(shape: PoolShape, side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The shape's mask (and parts) resized so its longer side is ``side`` (nearest)."""
    height, width = shape.mask.shape
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    mask = cv2.resize(shape.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    parts = None if shape.parts is None else cv2.resize(shape.parts, size, interpolation=cv2.INTER_NEAREST)
    return mask, parts


def _canvas_mask(mask: np.ndarray, x: int, y: int, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), bool)
    h, w = mask.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, height), min(x + w, width)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    return canvas


def compose(pool: list[PoolShape], placements: list[Placement], height: int, width: int) -> Layout:
    """The layout of placements drawn in order: visible masks, classes, parts."""
    masks, classes = [], []
    parts = np.zeros((height, width), np.uint8)
    any_parts = False
    for placement in placements:
        shape = pool[placement.shape]
        mask, shape_parts = scaled(shape, placement.side)
        canvas = _canvas_mask(mask, placement.x, placement.y, height, width)
        masks = [m & ~canvas for m in masks]
        masks.append(canvas)
        classes.append(shape.class_id)
        parts[canvas] = 0
        if shape_parts is not None:
            any_parts = True
            full = np.zeros((height, width), np.uint8)
            h, w = shape_parts.shape
            y0, x0 = max(placement.y, 0), max(placement.x, 0)
            y1, x1 = min(placement.y + h, height), min(placement.x + w, width)
            full[y0:y1, x0:x1] = shape_parts[y0 - placement.y:y1 - placement.y, x0 - placement.x:x1 - placement.x]
            parts[canvas] = full[canvas]
    if not masks:
        return Layout(Instances.empty(height, width), parts if any_parts else None)
    return Layout(Instances.from_masks(np.stack(masks), np.array(classes, np.int64)), parts if any_parts else None)


def place_objects(pool: list[PoolShape], by_class: dict[int, list[int]], count: int, height: int, width: int,
                  side_range: tuple[float, float], rng: np.random.Generator, min_visible: float = 0.5,
                  min_area: int = 4, attempts: int = 20) -> list[Placement]:
    """Up to ``count`` placements of random shapes of random classes (of ``by_class``),
    each tried ``attempts`` times until every object keeps ``min_visible`` of its pixels."""
    classes = sorted(by_class)
    placements: list[Placement] = []
    full_areas: list[int] = []
    for _ in range(count):
        class_id = classes[int(rng.integers(len(classes)))]
        for _attempt in range(attempts):
            shape = by_class[class_id][int(rng.integers(len(by_class[class_id])))]
            side = max(2, round(rng.uniform(*side_range) * min(height, width)))
            mask, _ = scaled(pool[shape], side)
            x = int(rng.integers(-mask.shape[1] // 4, width - 3 * mask.shape[1] // 4 + 1))
            y = int(rng.integers(-mask.shape[0] // 4, height - 3 * mask.shape[0] // 4 + 1))
            trial = placements + [Placement(shape, side, x, y)]
            layout = compose(pool, trial, height, width)
            own = full_areas + [int(_canvas_mask(mask, x, y, height, width).sum())]
            if len(layout.instances) == len(trial) and all(
                    v >= max(min_area, min_visible * a) for v, a in zip(layout.instances.area, own)):
                placements, full_areas = trial, own
                break
    return placements
