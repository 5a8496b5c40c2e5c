"""Evaluate a COCO / LVIS file against itself (GT as detections) in both evaluators."""

import contextlib
import io
import json

from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def gt_as_detections(dataset: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "segmentation": a["segmentation"], "score": 1.0} for a in dataset["annotations"]]


def quiet(fn):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


def self_ap(path, kind: str, lvis: bool = False) -> dict:
    """AP of the file's own annotations as detections: {"pycocotools": .., "faster": ..}
    (pycocotools only for COCO files; faster-coco-eval in LVIS mode for LVIS files)."""
    dataset = json.loads(open(path).read())
    result = {}
    if not lvis:
        gt = quiet(lambda: COCO(str(path)))
        ev = COCOeval(gt, quiet(lambda: gt.loadRes(gt_as_detections(dataset))), kind)
        quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
        result["pycocotools"] = ev.stats[0]
    fgt = quiet(lambda: FasterCOCO(str(path)))
    fev = COCOeval_faster(fgt, fgt.loadRes(gt_as_detections(dataset)), kind, lvis_style=lvis,
                          print_function=lambda *a: None)
    fev.evaluate()
    fev.accumulate()
    fev.summarize()
    result["faster"] = fev.stats[0]
    return result


def world_as_lvis(world, path, frequencies=("f",)):
    """The world's train split as an LVIS file (frequency groups cycled over categories)."""
    real = json.loads((world / "annotations" / "instances_train.json").read_text())
    for image in real["images"]:
        image["neg_category_ids"], image["not_exhaustive_category_ids"] = [], []
    for k, category in enumerate(real["categories"]):
        category.update(synonyms=[category["name"]], frequency=frequencies[k % len(frequencies)])
    for annotation in real["annotations"]:
        annotation.pop("iscrowd", None)
    path.write_text(json.dumps(real))
    return path
