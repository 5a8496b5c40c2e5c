"""Export a run's samples to COCO / LVIS instances or a VOC-style segmentation set.

COCO layout::  images/*.png, annotations/instances.json (RLE masks, area = mask pixels)
LVIS layout::  images/*.png, annotations/lvis_v1_train.json (see ``synthscene.formats.lvis``)
VOC layout::   JPEGImages/*.png, SegmentationClass/*.png (palette, 255 ignore),
               ImageSets/Segmentation/train.txt, labels.txt
Cityscapes::   leftImg8bit/train/synthscene/*_leftImg8bit.png, gtFine/train/synthscene/
               *_gtFine_labelIds.png + *_gtFine_instanceIds.png, labels.json
               (see ``synthscene.formats.cityscapes``)
YOLO layout::  data.yaml, images/train/*.png, labels/train/*.txt (boxes or polygons,
               see ``synthscene.formats.yolo``)
HF layout::    README.md (dataset card), data/train-*.parquet (see ``synthscene.formats.hf``)
(Images stay PNG: re-encoding labels' source images as JPEG would blur the boundaries
the masks were drawn on.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from synthscene.formats.cityscapes import write_cityscapes
from synthscene.formats.coco import instances_to_annotations, new_coco
from synthscene.formats.lvis import lvis_image_fields, update_category_counts
from synthscene.formats.voc import write_voc
from synthscene.io import atomic_output_dir, write_json
from synthscene.store import Run, open_run

FORMATS = ("coco", "lvis", "voc", "cityscapes", "yolo", "hf")
YOLO_TASKS = ("auto", "detect", "segment")


def export_run(run: str | Path, fmt: str, out: str | Path, overwrite: bool = False, negatives: str = "none",
               allow_partial: bool = False, yolo_task: str = "auto") -> Path:
    """Write the run's samples in ``fmt`` to ``out`` (all or nothing). ``negatives``
    (LVIS only): which categories an image declares absent, see ``synthscene.formats.lvis``.
    ``yolo_task``: boxes (detect), polygons (segment), or auto (polygons when the run has
    masks). An unfinished run is refused unless ``allow_partial``; ``export.json`` records
    which run was exported and how many of its shards were done."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if yolo_task not in YOLO_TASKS:
        raise ValueError(f"unknown YOLO task {yolo_task!r}; choose one of {', '.join(YOLO_TASKS)}")
    opened = open_run(run)
    completeness = opened.completeness(allow_partial)
    if fmt == "hf":
        from synthscene.formats.hf import import_datasets

        import_datasets()  # refused before anything is written when it is not installed
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_json(tmp / "export.json", {"run": str(opened.root), "format": fmt, **completeness}, indent=2)
        if fmt in ("voc", "cityscapes") and any(sample.semantic is None for sample in opened.samples()):
            raise ValueError(f"{run} holds samples without semantic masks: export it as coco or lvis")
        if fmt == "voc":
            write_voc(opened.items(), opened.class_names, tmp)
        elif fmt == "cityscapes":
            write_cityscapes(opened.samples(), opened.class_names, tmp)
        elif fmt == "yolo":
            from synthscene.formats.yolo import write_yolo

            if yolo_task == "auto":
                yolo_task = "segment" if all(s.instances.has_masks for s in opened.samples()) else "detect"
            write_yolo(opened.items(), opened.class_names, tmp, yolo_task)
        elif fmt == "hf":
            from synthscene.formats.hf import write_hf

            write_hf(opened, tmp)
        else:
            export_coco(opened, tmp, lvis=fmt == "lvis", negatives=negatives)
    return Path(out)


def export_coco(run: Run, out: Path, lvis: bool = False, negatives: str = "none") -> None:
    (out / "images").mkdir()
    (out / "annotations").mkdir()
    classes = run.spec.classes
    dataset = new_coco(run.class_names, f"synthscene run {run.root.name}")
    for category, cls in zip(dataset["categories"], classes):
        # kept in COCO too (an extra field COCO tools ignore), so a merge can match a real
        # "sports ball" to a class named "ball" with that synonym
        category["synonyms"] = [cls.name, *cls.synonyms]
        if lvis:
            category["def"] = cls.definition
    for sample, files in run.items():
        image_id = sample.index + 1
        name = f"{sample.index:07d}.png"
        shutil.copyfile(files.image, out / "images" / name)
        image = {"id": image_id, "file_name": name, "height": sample.height, "width": sample.width,
                 "caption": sample.caption, "seed": sample.seed}
        annotations = instances_to_annotations(sample.instances, image_id, len(dataset["annotations"]) + 1)
        if lvis:
            annotated = {a["category_id"] - 1 for a in annotations}
            image.update(lvis_image_fields(list(sample.class_ids), annotated, sum(sample.dropped.values()),
                                           len(classes), negatives))
            for annotation in annotations:
                annotation.pop("iscrowd")  # LVIS has no crowd annotations
        dataset["images"].append(image)
        dataset["annotations"] += annotations
    if lvis:
        update_category_counts(dataset, keep_frequency=False)
    write_json(out / "annotations" / ("lvis_v1_train.json" if lvis else "instances.json"), dataset)
