"""Instance labels of a synthetic shapes-world dataset, scored against the oracle's instances.

    .venv/bin/python benchmarks/instance_label_quality.py --data DIR/annotations/instances.json

DIR is a COCO export (``synthscene export --format coco``) of images made on the embedded
model. The oracle labels every image by colour; its instances are the connected components
(8-connected, at least 4 pixels) of each class. The dataset's own annotations are scored as
detections against them (all with score 1, so AP reads as a precision / recall summary)
with synthscene's evaluator. Last line: JSON with ``segm_ap``, ``segm_ap50``, ``bbox_ap``,
``bbox_ap50``, and the instance counts.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image
from tqdm import tqdm

from synthscene.codecs import mask_to_rle
from synthscene.evaluation.detection import evaluate_detections
from synthscene.train.data import InstanceDataset
from synthscene.world import CLASS_NAMES
from synthscene.world.oracle import oracle_instances

MIN_AREA = 4


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a COCO instances.json of a shapes-world dataset")
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
