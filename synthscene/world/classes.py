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


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("ball", "balls", "red", 0.0, "circle"),
    ShapeClass("leaf", "leaves", "green", 120.0, "leaf"),
    ShapeClass("box", "boxes", "blue", 225.0, "square"),
    ShapeClass("hat", "hats", "yellow", 58.0, "triangle"),
    ShapeClass("star", "stars", "purple", 285.0, "star"),
    ShapeClass("ring", "rings", "orange", 29.0, "ring"),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# Hue jitter of an object's colour around its family centre (degrees). Neighbouring
# families (red 0, orange 29, yellow 58) stay separated by >= 29 - 2 * 8 = 13 degrees.
HUE_JITTER = 8.0
# Saturation ranges: objects are >= OBJECT_MIN_SATURATION, background and clutter
# <= BACKGROUND_MAX_SATURATION; the oracle splits halfway between.
OBJECT_MIN_SATURATION = 0.6
BACKGROUND_MAX_SATURATION = 0.2
OBJECT_MIN_VALUE = 0.45
