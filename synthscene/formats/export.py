"""Export a run's sample store to COCO instances or a VOC-style segmentation set.

COCO layout::  images/*.png, annotations/instances.json (RLE masks, area = mask pixels)
LVIS layout::  images/*.png, annotations/lvis_v1_train.json (see ``synthscene.formats.lvis``)
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
from synthscene.formats.lvis import lvis_image_fields, update_category_counts
from synthscene.io import atomic_output_dir, write_json
from synthscene.store import read_records, record_path

FORMATS = ("coco", "lvis", "voc")


def run_classes(run: Path) -> list[dict]:
    """The class entries (name, synonyms, ...) of a run, from its resolved spec."""
    spec_file = Path(run) / "spec.resolved.yaml"
    if not spec_file.is_file():
        raise FileNotFoundError(f"{run} has no spec.resolved.yaml: not a synthscene run folder")
    return yaml.safe_load(spec_file.read_text())["classes"]


def run_class_names(run: Path) -> list[str]:
    """Class names of a run, from its resolved spec."""
    return [c["name"] for c in run_classes(run)]


def export_run(run: str | Path, fmt: str, out: str | Path, overwrite: bool = False, negatives: str = "none") -> Path:
    """Write the run's samples in ``fmt`` to ``out`` (all or nothing). ``negatives``
    (LVIS only): which categories an image declares absent, see ``synthscene.formats.lvis``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = Path(run)
    classes = run_classes(run)
    records = list(read_records(run))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if fmt == "voc":
            export_voc(records, [c["name"] for c in classes], tmp, run.name)
        else:
            export_coco(records, classes, tmp, run.name, lvis=fmt == "lvis", negatives=negatives)
    return Path(out)


def export_coco(records, classes: list[dict], out: Path, description: str, lvis: bool = False,
                negatives: str = "none") -> None:
    (out / "images").mkdir()
    (out / "annotations").mkdir()
    dataset = new_coco([c["name"] for c in classes], f"synthscene run {description}")
    if lvis:
        for category, cls in zip(dataset["categories"], classes):
            category["synonyms"] = [cls["name"], *cls.get("synonyms", [])]
            category["def"] = cls.get("definition", "")
    for shard, record in records:
        image_id = record["index"] + 1
        name = f"{record['index']:07d}.png"
        shutil.copyfile(record_path(shard, record["image"]), out / "images" / name)
        image = {"id": image_id, "file_name": name, "height": record["height"], "width": record["width"],
                 "caption": record["prompt"], "seed": record["seed"]}
        annotations = record_to_annotations(record, image_id, len(dataset["annotations"]) + 1)
        if lvis:
            annotated = {a["category_id"] - 1 for a in annotations}
            image.update(lvis_image_fields(record.get("class_ids", []), annotated, record.get("dropped_small", 0),
                                           len(classes), negatives))
            for annotation in annotations:
                annotation.pop("iscrowd")  # LVIS has no crowd annotations
        dataset["images"].append(image)
        dataset["annotations"] += annotations
    if lvis:
        update_category_counts(dataset, keep_frequency=False)
    write_json(out / "annotations" / ("lvis_v1_train.json" if lvis else "instances.json"), dataset)


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
