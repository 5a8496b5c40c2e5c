"""Export a run's sample store to COCO instances or a VOC-style segmentation set.

COCO layout::  images/*.png, annotations/instances.json (RLE masks, area = mask pixels)
VOC layout::   JPEGImages/*.png, SegmentationClass/*.png (palette, 255 ignore),
               ImageSets/Segmentation/train.txt, labels.txt
(Images stay PNG: re-encoding labels' source images as JPEG would blur the boundaries
the masks were drawn on.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from synthscene.formats.coco import new_coco, record_to_annotations
from synthscene.io import atomic_output_dir, write_json
from synthscene.store import read_records, record_path

FORMATS = ("coco", "voc")


def run_class_names(run: Path) -> list[str]:
    """Class names of a run, from its resolved spec."""
    spec_file = Path(run) / "spec.resolved.yaml"
    if not spec_file.is_file():
        raise FileNotFoundError(f"{run} has no spec.resolved.yaml: not a synthscene run folder")
    return [c["name"] for c in yaml.safe_load(spec_file.read_text())["classes"]]


def export_run(run: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> Path:
    """Write the run's samples in ``fmt`` to ``out`` (all or nothing)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = Path(run)
    names = run_class_names(run)
    records = list(read_records(run))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (export_coco if fmt == "coco" else export_voc)(records, names, tmp, run.name)
    return Path(out)


def export_coco(records, class_names, out: Path, description: str) -> None:
    (out / "images").mkdir()
    (out / "annotations").mkdir()
    coco = new_coco(class_names, f"synthscene run {description}")
    for shard, record in records:
        image_id = record["index"] + 1
        name = f"{record['index']:07d}.png"
        shutil.copyfile(record_path(shard, record["image"]), out / "images" / name)
        coco["images"].append({"id": image_id, "file_name": name, "height": record["height"],
                               "width": record["width"], "caption": record["prompt"], "seed": record["seed"]})
        coco["annotations"] += record_to_annotations(record, image_id, len(coco["annotations"]) + 1)
    write_json(out / "annotations" / "instances.json", coco)


def export_voc(records, class_names, out: Path, description: str) -> None:
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / folder).mkdir(parents=True)
    stems = []
    for shard, record in records:
        stem = f"{record['index']:07d}"
        shutil.copyfile(record_path(shard, record["image"]), out / "JPEGImages" / f"{stem}.png")
        shutil.copyfile(record_path(shard, record["semantic"]), out / "SegmentationClass" / f"{stem}.png")
        stems.append(stem)
    (out / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(s + "\n" for s in stems))
    (out / "labels.txt").write_text("background\n" + "".join(n + "\n" for n in class_names))
