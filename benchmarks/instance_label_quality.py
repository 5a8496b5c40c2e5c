"""Instance labels of a synthetic shapes-world dataset, scored against the oracle's instances.

    .venv/bin/python benchmarks/instance_label_quality.py --data DIR/annotations/instances.json

DIR is a COCO export (``synthscene export --format coco``) of images made on the embedded
model. The oracle labels every image by colour; its instances are the connected components
(8-connected, at least 4 pixels) of each class. The dataset's own annotations are scored as
detections against them (all with score 1, so AP reads as a precision / recall summary)
with synthscene's evaluator. Last line: JSON with ``segm_ap``, ``segm_ap50``, ``bbox_ap``,
``bbox_ap50``, and the instance counts.

``--curve``: which per-instance score ranks good instances first, and what filtering on it
buys. For each score the export carries (``score``, ``area`` and every number in the
annotations' ``attributes``: the labeller's checks), the instances are ranked by it
(highest first) and, keeping the top 100 % ... 50 %: ``segm_ap`` of what is kept (scores
all 1 as above, so recall losses count) and ``precision50``, the fraction of kept instances
that match an oracle instance of their class at mask IoU >= 0.5. ``ranked_segm_ap``: the
AP with that score as the detection score (how well it orders good before bad). An
instance without a value (a check that did not run) ranks last.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from synthscene.codecs import mask_to_rle
from synthscene.evaluation.detection import evaluate_detections
from synthscene.train.data import InstanceDataset
from synthscene.world import CLASS_NAMES
from synthscene.world.oracle import oracle_instances

MIN_AREA = 4
FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def oracle_ground_truth(dataset: InstanceDataset, categories: list[dict]) -> dict:
    """A COCO dict of the oracle's instances on the dataset's images."""
    category_of = {c["name"]: c["id"] for c in categories}
    annotations = []
    for info, path in tqdm(list(zip(dataset.images, dataset.paths)), desc="oracle instances"):
        instances = oracle_instances(np.array(Image.open(path).convert("RGB")), MIN_AREA)
        for mask, class_index in zip(instances.masks, instances.class_id.tolist()):
            ys, xs = np.nonzero(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": info["id"], "category_id": category_of[CLASS_NAMES[class_index]],
                "segmentation": mask_to_rle(mask), "area": int(mask.sum()), "iscrowd": 0,
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            })
    return {"images": dataset.images, "categories": categories, "annotations": annotations}


def matches_oracle(truth: dict, annotations: list[dict], iou: float = 0.5) -> np.ndarray:
    """bool per annotation: its mask overlaps an oracle instance of its class at >= ``iou``."""
    by_image: dict = {}
    for a in truth["annotations"]:
        by_image.setdefault((a["image_id"], a["category_id"]), []).append(a["segmentation"])
    matched = np.zeros(len(annotations), bool)
    for k, a in enumerate(annotations):
        candidates = by_image.get((a["image_id"], a["category_id"]), [])
        if candidates:
            matched[k] = mask_utils.iou([a["segmentation"]], candidates, [0] * len(candidates)).max() >= iou
    return matched


def score_curves(truth: dict, annotations: list[dict]) -> dict:
    """Per score field: ranked AP and, per kept fraction, AP and precision of the top instances."""
    fields = {"score": [a.get("score", 1.0) for a in annotations], "area": [a["area"] for a in annotations]}
    names = sorted({k for a in annotations for k, v in a.get("attributes", {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None})
    for name in names:
        fields[name] = [a.get("attributes", {}).get(name) for a in annotations]
    matched = matches_oracle(truth, annotations)
    curves = {}
    for name, values in fields.items():
        value = np.array([-np.inf if v is None else float(v) for v in values])
        if np.isfinite(value).sum() == 0 or np.unique(value).size == 1:
            continue  # a field no instance has, or one value for all: it ranks nothing
        order = np.argsort(-value, kind="stable")
        finite = value[np.isfinite(value)]
        as_score = np.where(np.isfinite(value), value, finite.min() - 1.0)  # no value: ranked last
        ranked = [{**_detection(a), "score": float(v)} for a, v in zip(annotations, as_score)]
        curve = {"ranked_segm_ap": round(evaluate_detections(truth, ranked, "segm")["AP"], 4), "kept": {}}
        for fraction in FRACTIONS:
            keep = order[: max(1, round(fraction * len(order)))]
            stats = evaluate_detections(truth, [_detection(annotations[i]) for i in keep], "segm")
            curve["kept"][str(fraction)] = {"segm_ap": round(stats["AP"], 4),
                                            "precision50": round(float(matched[keep].mean()), 4)}
        curves[name] = curve
    return curves


def _detection(annotation: dict) -> dict:
    return {"image_id": annotation["image_id"], "category_id": annotation["category_id"],
            "segmentation": annotation["segmentation"], "bbox": annotation["bbox"], "score": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a COCO instances.json of a shapes-world dataset")
    parser.add_argument("--curve", action="store_true", help="AP and precision as a function of the fraction kept, "
                                                             "per score")
    args = parser.parse_args()
    data = json.loads(open(args.data).read())
    if sorted(c["name"] for c in data["categories"]) != sorted(CLASS_NAMES):
        raise SystemExit("the dataset's classes must be the shapes world's to use the oracle")
    dataset = InstanceDataset(args.data)
    truth = oracle_ground_truth(dataset, data["categories"])
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                   "bbox": a["bbox"], "score": 1.0} for a in data["annotations"]]
    result = {}
    for iou_type in ("segm", "bbox"):
        stats = evaluate_detections(truth, detections, iou_type)
        result[f"{iou_type}_ap"] = round(stats["AP"], 4)
        result[f"{iou_type}_ap50"] = round(stats["AP50"], 4)
    result.update(images=len(dataset), annotations=len(detections), oracle_instances=len(truth["annotations"]))
    if args.curve:
        result["curves"] = score_curves(truth, data["annotations"])
        for name, curve in result["curves"].items():
            kept = ", ".join(f"{f}: ap {v['segm_ap']:.3f} prec {v['precision50']:.3f}" for f, v in curve["kept"].items())
            print(f"{name:>20}  ranked ap {curve['ranked_segm_ap']:.3f} | {kept}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
