"""The shapes world's object classes: each has its own shape AND its own colour family.

The colour families are what make an exact oracle possible (``oracle.py``): every class
pixel is strongly saturated with a hue inside its family, every background or clutter
pixel is weakly saturated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeClass:
    name: str
    plural: str
    colour: str  # the colour word used in captions
    hue: float  # centre of the colour family, degrees in [0, 360)
    shape: str
    # Part names, light part first: a part-aware class paints its first part light and its
    # second dark (``PART_VALUE_RANGES``), so the oracle can read parts from brightness.
    parts: tuple[str, ...] = ()


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("ball", "balls", "red", 0.0, "circle"),
    ShapeClass("leaf", "leaves", "green", 120.0, "leaf"),
    ShapeClass("box", "boxes", "blue", 225.0, "square", parts=("face", "frame")),
    ShapeClass("hat", "hats", "yellow", 58.0, "triangle"),
    ShapeClass("star", "stars", "purple", 285.0, "star", parts=("centre", "points")),
    ShapeClass("ring", "rings", "orange", 29.0, "ring"),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


@dataclass(frozen=True)
class Part:
    class_id: int  # 0-based into CLASSES
    name: str

    @property
    def full_name(self) -> str:
        return f"{CLASSES[self.class_id].name}/{self.name}"


# Every part of every part-aware class; a part map stores 1 + its index here (0: no part).
PARTS: tuple[Part, ...] = tuple(Part(i, name) for i, c in enumerate(CLASSES) for name in c.parts)
PART_NAMES: tuple[str, ...] = tuple(p.full_name for p in PARTS)


def part_ids(class_id: int) -> tuple[int, ...]:
    """The part-map values (1-based) of a class's parts, in the class's order; () if it has none."""
    return tuple(i + 1 for i, p in enumerate(PARTS) if p.class_id == class_id)

# Hue jitter of an object's colour around its family centre (degrees). Neighbouring
# families (red 0, orange 29, yellow 58) stay separated by >= 29 - 2 * 8 = 13 degrees.
HUE_JITTER = 8.0
# Saturation ranges: objects are >= OBJECT_MIN_SATURATION, background and clutter
# <= BACKGROUND_MAX_SATURATION; the oracle splits halfway between.
OBJECT_MIN_SATURATION = 0.6
BACKGROUND_MAX_SATURATION = 0.2
OBJECT_MIN_VALUE = 0.45
# Brightness (HSV value) of a part-aware class's light and dark part. The ranges do not
# overlap, so the oracle splits parts halfway between them; both stay above the oracle's
# object threshold, so class labels are unchanged.
PART_VALUE_RANGES = ((0.78, 1.0), (0.5, 0.64))
