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


def instances_to_annotations(instances: Instances, image_id: int, first_annotation_id: int) -> list[dict]:
    """COCO annotations of one image: ``bbox`` xywh, ``area`` = mask pixels, iscrowd 0."""
    annotations = []
    for k in range(len(instances)):
        x1, y1, x2, y2 = (float(v) for v in instances.xyxy[k])
        annotations.append({
            "id": first_annotation_id + k,
            "image_id": image_id,
            "category_id": int(instances.class_id[k]) + 1,
            "segmentation": mask_to_rle(instances.masks[k]),
            "area": int(instances.masks[k].sum()),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "iscrowd": 0,
            "score": float(instances.score[k]),
        })
    return annotations


def new_coco(class_names, description: str) -> dict:
    return {
        "info": {"description": description},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": coco_categories(class_names),
    }
