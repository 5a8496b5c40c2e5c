"""A layout (semantic map, instances, optional parts) and the control image it becomes.

The control image a ControlNet reads has one channel per class (the semantic map, one-hot),
one channel of instance boundaries (so touching objects of one class stay apart), and one
channel per part (one-hot) when the layout has parts; channels of parts not known are 0,
which is also how a part-free control looks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthscene.records import Instances


@dataclass
class Layout:
    """What an image should show, pixel by pixel.

    Attributes:
        instances: the objects: visible masks (not overlapping) and 0-based class ids.
        parts: uint8 [H, W], 0 no part, else 1 + an index into the dataset's part list;
            None when the layout has no part labels.
    """

    instances: Instances
    parts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.instances.masks is None:
            raise ValueError("a layout needs instance masks, not only boxes")
        if self.parts is not None and self.parts.shape != self.instances.masks.shape[1:]:
            raise ValueError(f"part map {self.parts.shape} and masks {self.instances.masks.shape[1:]} differ in size")

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.instances.masks.shape[1:])

    @property
    def semantic(self) -> np.ndarray:
        """uint8 [H, W]: 0 background, class id + 1 (later instances drawn over earlier)."""
        semantic = np.zeros(self.size, np.uint8)
        for mask, class_id in zip(self.instances.masks, self.instances.class_id):
            semantic[mask] = class_id + 1
        return semantic

    def instance_ids(self) -> np.ndarray:
        """int32 [H, W]: 0 background, k + 1 where instance k is (later ones on top)."""
        ids = np.zeros(self.size, np.int32)
        for k, mask in enumerate(self.instances.masks):
            ids[mask] = k + 1
        return ids


def instance_boundaries(ids: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of an instance with a 4-neighbour outside it (another instance
    or background)."""
    edge = np.zeros(ids.shape, bool)
    vertical = ids[1:] != ids[:-1]
    horizontal = ids[:, 1:] != ids[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (ids > 0)


def control_channels(num_classes: int, num_parts: int) -> int:
    return num_classes + 1 + num_parts


def control_image(layout: Layout, num_classes: int, num_parts: int = 0, with_parts: bool = True) -> np.ndarray:
    """float32 [num_classes + 1 + num_parts, H, W] in {0, 1}: classes one-hot, instance
    boundaries, parts one-hot (all 0 without ``with_parts`` or when the layout has none)."""
    if len(layout.instances) and int(layout.instances.class_id.max()) >= num_classes:
        raise ValueError(f"layout has class id {int(layout.instances.class_id.max())}, but the control "
                         f"encodes {num_classes} classes")
    height, width = layout.size
    control = np.zeros((control_channels(num_classes, num_parts), height, width), np.float32)
    semantic = layout.semantic
    for class_id in range(num_classes):
        control[class_id] = semantic == class_id + 1
    control[num_classes] = instance_boundaries(layout.instance_ids())
    if with_parts and layout.parts is not None and num_parts:
        if int(layout.parts.max()) > num_parts:
            raise ValueError(f"layout has part id {int(layout.parts.max())}, but the control encodes {num_parts} parts")
        for part in range(num_parts):
            control[num_classes + 1 + part] = layout.parts == part + 1
    return control


def count_caption(class_names: list[str], class_ids, plurals: dict[str, str] | None = None,
                  template: str = "a photo of {}") -> str:
    """A caption naming every object of a layout with its count, e.g. "a photo of two boxes
    and a star" (classes in order of first appearance)."""
    counts: dict[int, int] = {}
    for class_id in class_ids:
        counts[int(class_id)] = counts.get(int(class_id), 0) + 1
    if not counts:
        return template.format("an empty scene")
    numbers = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
    phrases = []
    for class_id, count in counts.items():
        name = class_names[class_id]
        if count == 1:
            phrases.append(("an " if name[:1].lower() in "aeiou" else "a ") + name)
        else:
            plural = (plurals or {}).get(name) or plural_of(name)
            phrases.append(f"{numbers.get(count, str(count))} {plural}")
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return template.format(listed)


def plural_of(name: str) -> str:
    """The plain English plural of a class name's last word (irregular ones: pass ``plurals``)."""
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and name[-2:-1] not in tuple("aeiou"):
        return name[:-1] + "ies"
    return name + "s"
