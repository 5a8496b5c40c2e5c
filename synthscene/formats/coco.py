"""COCO instances JSON (RLE masks) from ``Sample`` records."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from synthscene.records import Instances


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of one bool [H, W] mask, ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    """bool [H, W] from a COCO RLE (compressed, str or bytes counts)."""
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def coco_categories(class_names: list[str] | tuple[str, ...]) -> list[dict]:
    """COCO categories, ids 1..C in class order (class_id 0 -> category 1)."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(class_names)]


def coco_annotation(annotation_id: int, image_id: int, class_id: int, xyxy, rle: dict, area: int,
                    score: float) -> dict:
    """One COCO annotation: 1-based ``category_id``, ``bbox`` xywh, iscrowd 0."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return {"id": annotation_id, "image_id": image_id, "category_id": int(class_id) + 1, "segmentation": rle,
            "area": int(area), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "score": float(score)}


def instances_to_annotations(instances: Instances, image_id: int, first_annotation_id: int) -> list[dict]:
    """COCO annotations of one image; ``area`` is the mask's pixel count."""
    return [
        coco_annotation(first_annotation_id + k, image_id, instances.class_id[k], instances.xyxy[k],
                        mask_to_rle(instances.masks[k]), instances.masks[k].sum(), instances.score[k])
        for k in range(len(instances))
    ]


def record_to_annotations(record: dict, image_id: int, first_annotation_id: int) -> list[dict]:
    """COCO annotations from a stored sample record (its RLE is reused, not re-encoded)."""
    return [
        coco_annotation(first_annotation_id + k, image_id, inst["class_id"], inst["xyxy"], inst["mask"],
                        inst["area"], inst["score"])
        for k, inst in enumerate(record["instances"])
    ]


def new_coco(class_names, description: str) -> dict:
    return {
        "info": {"description": description},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": coco_categories(class_names),
    }
