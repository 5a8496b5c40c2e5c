"""Procedural scenes of the shapes world with exact labels.

A scene is drawn in three layers: a textured, weakly saturated background; clutter that
belongs to no class (also weakly saturated); then 0-4 objects, later ones occluding
earlier ones. Shapes are rasterised at 4x and area-downsampled so small objects keep
their shape; every image pixel then takes exactly one layer's colour, so the masks are
exact (no anti-aliased edge pixels that belong half to an object).
"""

from __future__ import annotations

import cv2
import numpy as np

from synthscene.records import Instances, Sample
from synthscene.world.classes import (
    BACKGROUND_MAX_SATURATION,
    CLASSES,
    HUE_JITTER,
    OBJECT_MIN_SATURATION,
    OBJECT_MIN_VALUE,
    PART_VALUE_RANGES,
    part_ids,
)

SUPERSAMPLE = 4
MAX_OBJECTS = 4
# An object must keep this share of its own pixels after later objects are drawn
# ("partial occlusion"), and at least MIN_AREA_FRACTION of the image.
MIN_VISIBLE_SHARE = 0.5
MIN_AREA_FRACTION = 0.01
# How many objects a scene asks for (0..4); empty scenes are rarer, they teach little.
OBJECT_COUNT_PROBABILITIES = (0.08, 0.3, 0.27, 0.2, 0.15)
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def scene_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a world with ``seed``: independent of how
    many scenes are drawn, in which order or by how many workers."""
    return np.random.default_rng([seed, index])


def render_scene(seed: int, index: int, size: int = 32) -> Sample:
    """Draw scene ``index`` of the world with ``seed`` (see ``scene_seed``).

    Returns:
        a ``Sample`` with an RGB uint8 [size, size, 3] image, exact instances (visible
        masks, tight boxes, class ids 0..5), a semantic mask (0 background, class id + 1),
        a part map (0 no part, else 1 + index into ``classes.PARTS``) and a caption naming
        every instance.
    """
    rng = scene_seed(seed, index)
    hsv = _background(rng, size)
    _draw_clutter(rng, hsv)
    shapes, class_ids = _place_objects(rng, size)
    masks = [mask for mask, _dark in shapes]
    parts = np.zeros((size, size), np.uint8)
    for (mask, dark), class_id in zip(shapes, class_ids):
        _paint_object(rng, hsv, mask, CLASSES[class_id].hue, dark)
        # drawn in order, so a later object's pixels overwrite an earlier one's parts
        parts[mask] = 0
        if dark is not None:
            light_id, dark_id = part_ids(class_id)
            parts[mask] = light_id
            parts[dark] = dark_id
    visible = _visible_masks(masks)
    image = cv2.cvtColor(hsv.astype(np.float32), cv2.COLOR_HSV2RGB)
    image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)

    instances = (
        Instances.from_masks(np.stack(visible), class_ids) if visible else Instances.empty(size, size)
    )
    semantic = np.zeros((size, size), np.uint8)
    for mask, class_id in zip(visible, class_ids):
        semantic[mask] = class_id + 1
    return Sample(index=index, seed=seed, caption=make_caption(rng, class_ids), image=image,
                  instances=instances, semantic=semantic, class_ids=tuple(sorted(set(class_ids))),
                  parts=parts)


def make_caption(rng: np.random.Generator, class_ids: list[int]) -> str:
    """A caption naming every instance, e.g. "a photo of two red balls and a leaf".

    Colour words are included half of the time so that prompts with and without them
    both work; the class noun is always there (labels are read from its attention).
    """
    if not class_ids:
        return str(rng.choice(["a photo of an empty scene", "an empty scene"]))
    with_colour = bool(rng.random() < 0.5)
    counts: dict[int, int] = {}
    for class_id in class_ids:
        counts[class_id] = counts.get(class_id, 0) + 1
    phrases = []
    for class_id, count in counts.items():
        cls = CLASSES[class_id]
        noun = cls.name if count == 1 else cls.plural
        words = f"{cls.colour} {noun}" if with_colour else noun
        if count == 1:
            phrases.append(("an " if words[0] in "aeiou" else "a ") + words)
        else:
            phrases.append(f"{_NUMBER_WORDS[count]} {words}")
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    template = str(rng.choice(["a photo of {}", "{}", "a picture of {}"]))
    return template.format(listed)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """float32 [size, size] in about [-1, 1]: a random grid, bicubically upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """HSV float32 [size, size, 3] (H degrees, S and V in [0, 1]), weakly saturated."""
    hsv = np.empty((size, size, 3), np.float32)
    hsv[..., 0] = rng.uniform(0, 360)
    hsv[..., 1] = rng.uniform(0.0, BACKGROUND_MAX_SATURATION * 0.8)
    value = rng.uniform(0.35, 0.85) + 0.12 * _smooth_noise(rng, size, int(rng.integers(2, 6)))
    if rng.random() < 0.4:  # stripes at a random angle
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3, 8)
        value += 0.06 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    hsv[..., 2] = np.clip(value, 0.05, 1.0)
    return hsv


def _draw_clutter(rng: np.random.Generator, hsv: np.ndarray) -> None:
    """Lines and blobs that belong to no class: weakly saturated, any hue."""
    size = hsv.shape[0]
    for _ in range(int(rng.integers(0, 4))):
        mask = np.zeros((size, size), np.uint8)
        if rng.random() < 0.5:
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            p2 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(mask, p1, p2, 1, thickness=1)
        else:
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(1, max(2, size // 10), 2))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        region = mask.astype(bool)
        hsv[region] = (rng.uniform(0, 360), rng.uniform(0, BACKGROUND_MAX_SATURATION), rng.uniform(0.2, 0.9))


# The face of a box is the square of this share of its radius (36 % of its area); the rest
# is its frame. A star's centre is the pentagon of its inner corners; the rest its points.
BOX_FACE_SHARE = 0.6


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One randomly sized, placed and rotated shape: its bool [size, size] mask and, for a
    shape with parts, the bool mask of its dark part (else None)."""
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.14, 0.27) * big
    cx, cy = rng.uniform(0.5 * radius, big - 0.5 * radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = np.zeros((big, big), np.uint8)
    light = None  # the light part, on a canvas of its own

    def polygon(radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
        pts = np.stack([cx + radii * np.cos(angles + angle), cy + radii * np.sin(angles + angle)], 1)
        return np.round(pts).astype(np.int32)

    if shape == "circle":
        cv2.circle(canvas, (int(cx), int(cy)), int(radius), 1, -1)
    elif shape == "ring":
        cv2.circle(canvas, (int(cx), int(cy)), int(radius), 1, -1)
        cv2.circle(canvas, (int(cx), int(cy)), int(radius * rng.uniform(0.45, 0.55)), 0, -1)
    elif shape == "square":
        a = np.arange(4) * np.pi / 2 + np.pi / 4
        cv2.fillPoly(canvas, [polygon(np.full(4, radius), a)], 1)
        light = np.zeros_like(canvas)
        cv2.fillPoly(light, [polygon(np.full(4, radius * BOX_FACE_SHARE), a)], 1)
    elif shape == "triangle":
        a = np.arange(3) * 2 * np.pi / 3
        cv2.fillPoly(canvas, [polygon(np.full(3, radius * 1.15), a)], 1)
    elif shape == "star":
        a = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.5)
        cv2.fillPoly(canvas, [polygon(r, a)], 1)
        light = np.zeros_like(canvas)
        cv2.fillPoly(light, [polygon(r[1::2], a[1::2])], 1)
    elif shape == "leaf":
        # a vesica: two circular arcs meeting in points, long axis rotated
        t = np.linspace(-np.pi / 2, np.pi / 2, 24)
        half_width = rng.uniform(0.35, 0.5)
        xs = radius * np.sin(t)
        ys = radius * half_width * np.cos(t)
        pts = np.concatenate([np.stack([xs, ys], 1), np.stack([xs[::-1], -ys[::-1]], 1)])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T + (cx, cy)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cover = cv2.resize(canvas.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    mask = cover >= 0.5
    if light is None:
        return mask, None
    # a pixel belongs to the part that covers most of its object share
    light_cover = cv2.resize(light.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return mask, mask & (light_cover * 2 < cover)


def _place_objects(rng: np.random.Generator, size: int
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], list[int]]:
    """Choose 0-4 objects (repeats of a class are common) and place them so that every
    one keeps at least MIN_VISIBLE_SHARE of its pixels and MIN_AREA_FRACTION of the image.

    Returns:
        (mask, dark part or None) per object in drawing order, and their class ids.
    """
    count = int(rng.choice(MAX_OBJECTS + 1, p=OBJECT_COUNT_PROBABILITIES))
    palette = rng.choice(len(CLASSES), size=int(rng.integers(1, 4)), replace=False)
    wanted = [int(rng.choice(palette)) for _ in range(count)]
    min_area = MIN_AREA_FRACTION * size * size
    shapes: list[tuple[np.ndarray, np.ndarray | None]] = []
    masks: list[np.ndarray] = []
    class_ids: list[int] = []
    for class_id in wanted:
        for _attempt in range(20):
            mask, dark = _shape_mask(rng, CLASSES[class_id].shape, size)
            trial = _visible_masks(masks + [mask])
            ok = all(
                v.sum() >= max(min_area, MIN_VISIBLE_SHARE * m.sum()) for v, m in zip(trial, masks + [mask])
            )
            if ok:
                shapes.append((mask, dark))
                masks.append(mask)
                class_ids.append(class_id)
                break
    return shapes, class_ids


def _visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Masks drawn in order; each loses the pixels of the ones drawn after it."""
    visible = []
    covered = np.zeros_like(masks[0]) if masks else None
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered = covered | mask
    return visible[::-1]


def _paint_object(rng: np.random.Generator, hsv: np.ndarray, mask: np.ndarray, hue: float,
                  dark: np.ndarray | None = None) -> None:
    """Fill ``mask`` with a shade of the class colour family and a mild texture; with a
    ``dark`` part, the texture is squeezed into the light and dark parts' value ranges."""
    size = hsv.shape[0]
    value = rng.uniform(0.6, 1.0) + 0.1 * _smooth_noise(rng, size, int(rng.integers(2, 5)))
    if rng.random() < 0.3:  # striped texture
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        value += 0.08 * np.sign(np.sin((xx + yy) * 2 * np.pi / rng.uniform(3, 6)))
    hsv[mask, 0] = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 360
    hsv[mask, 1] = rng.uniform(OBJECT_MIN_SATURATION + 0.05, 1.0)
    value = np.clip(value, OBJECT_MIN_VALUE + 0.05, 1.0)
    if dark is not None:
        shade = (value - value.min()) / max(float(np.ptp(value)), 1e-6)  # texture in [0, 1]
        (light_low, light_high), (dark_low, dark_high) = PART_VALUE_RANGES
        value = np.where(dark, dark_low + (dark_high - dark_low) * shade, light_low + (light_high - light_low) * shade)
    hsv[mask, 2] = value[mask]
