"""Layouts of a real dataset: (image, caption, layout) triples for ControlNet training and
for the layout method.

``open_layouts(data, split)`` reads:
- a dataset folder (``synthscene world`` writes one): ``annotations/instances_{split}.json``
  with images under the folder, and, when the folder has a part list (``world.json`` or
  ``parts.json``), the part map beside each image (``parts/`` mirroring ``images/``);
- a COCO instances ``.json`` (images found as ``synthscene.formats.coco`` finds them);
- a Cityscapes folder (``gtFine/`` + ``leftImg8bit/``), split ``train`` / ``val``.
Only instance masks make a layout: a box-only dataset is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthscene.codecs import load_semantic_png
from synthscene.layout.maps import Layout, count_caption
from synthscene.parts.data import PartSchema, part_map_file
from synthscene.records import Instances


class LayoutSource:
    """A dataset read as layouts: ``len()``, ``class_names``, ``parts`` (a ``PartSchema`` or
    None) and ``item(i)`` -> (uint8 image [H, W, 3], caption, ``Layout``)."""

    def __init__(self, source, parts: PartSchema | None = None, plurals: dict[str, str] | None = None):
        self.source = source
        self.class_names = list(source.class_names)
        self.parts = parts
        self.plurals = plurals or {}
        if parts is not None:
            unknown = [c for c in parts.classes if c not in self.class_names]
            if unknown:
                raise ValueError(f"the part list names classes the dataset does not have: {', '.join(unknown)}")

    def __len__(self) -> int:
        return len(self.source)

    def item(self, index: int) -> tuple[np.ndarray, str, Layout]:
        sample = self.source.sample(index)
        if not len(sample.instances):  # an image without objects: an empty layout
            sample.instances = Instances.empty(*sample.image.shape[:2])
        if sample.instances.masks is None:
            raise ValueError(f"image {index} of the dataset has boxes but no masks: a layout needs instance masks")
        parts = None
        if self.parts is not None:
            parts = load_semantic_png(part_map_file(Path(self.source.paths[index])))
        caption = count_caption(self.class_names, sample.instances.class_id, self.plurals)
        return sample.image, caption, Layout(sample.instances, parts)

    @property
    def num_parts(self) -> int:
        return 0 if self.parts is None else len(self.parts.parts)


def open_layouts(data: str | Path, split: str = "train") -> LayoutSource:
    """The layouts of a dataset folder, a COCO instances file or a Cityscapes folder."""
    from synthscene.formats.coco import read_coco

    data = Path(data)
    plurals = _world_plurals()
    if data.is_file():
        return LayoutSource(read_coco(data), plurals=plurals)
    if (data / "gtFine").is_dir():
        from synthscene.formats.cityscapes import CityscapesSource

        return LayoutSource(CityscapesSource(data, split), plurals=plurals)
    annotation_file = data / "annotations" / f"instances_{split}.json"
    if not annotation_file.is_file():
        raise FileNotFoundError(f"{data}: expected a dataset folder with {annotation_file.relative_to(data)}, "
                                "a COCO instances .json or a Cityscapes folder")
    has_parts = any((data / name).is_file() for name in ("parts.json", "world.json"))
    try:
        parts = PartSchema.read(data) if has_parts else None
    except ValueError:  # a world.json without parts
        parts = None
    return LayoutSource(read_coco(annotation_file, [data]), parts, plurals)


def _world_plurals() -> dict[str, str]:
    from synthscene.world.classes import CLASSES

    return {c.name: c.plural for c in CLASSES}
