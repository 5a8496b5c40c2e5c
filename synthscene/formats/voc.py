"""VOC-style segmentation sets: ``JPEGImages/``, ``SegmentationClass/`` palette PNGs
(0 background, 1..C classes, 255 ignore; codecs in ``synthscene.codecs``), ``labels.txt``."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_voc(items, class_names: list[str], out: Path) -> None:
    """Write a VOC-style set from ``(sample, files)`` pairs of a run (``synthscene.store``)."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / folder).mkdir(parents=True)
    stems = []
    for sample, files in items:
        stem = f"{sample.index:07d}"
        shutil.copyfile(files.image, out / "JPEGImages" / f"{stem}.png")
        shutil.copyfile(files.semantic, out / "SegmentationClass" / f"{stem}.png")
        stems.append(stem)
    (out / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(s + "\n" for s in stems))
    (out / "labels.txt").write_text("background\n" + "".join(n + "\n" for n in class_names))
