"""Box and mask AP of detections against a COCO or LVIS instances file.

    from synthscene.evaluation.detection import evaluate_detections
    evaluate_detections("val.json", detections, iou_type="segm")

faster-coco-eval computes the scores (and LVIS's AP_r / AP_c / AP_f: LVIS files are
recognised by their categories' ``frequency``); pycocotools is the fallback for COCO files
and gives the same numbers (tested). Detections are COCO results: ``image_id``,
``category_id``, ``score`` and ``bbox`` (xywh) and/or ``segmentation`` (RLE).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

BACKENDS = ("auto", "faster", "pycocotools")
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def load_ground_truth(gt: str | Path | dict) -> dict:
    if isinstance(gt, dict):
        return gt
    path = Path(gt)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} does not exist")
    return json.loads(path.read_text())


def evaluate_detections(gt: str | Path | dict, detections: list[dict], iou_type: str = "bbox",
                        backend: str = "auto", classes: list[str] | tuple[str, ...] | None = None) -> dict:
    """{"AP", "AP50", "AP75", ..., "per_class": {name: AP}, ["APr", "APc", "APf"], "backend"}.

    AP values are in [0, 1]; a class without ground truth has AP None. ``classes``: score only
    these categories (by name; the others' truth and detections are left out), e.g. the base
    or the novel classes of an open-vocabulary split.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    dataset = load_ground_truth(gt)
    if classes is not None:
        dataset, detections = _only_classes(dataset, detections, classes)
    lvis = any("frequency" in c for c in dataset["categories"])
    _check_detections(dataset, detections, iou_type)
    if backend == "auto":
        backend = "faster" if _has_faster() else "pycocotools"
    if backend == "pycocotools" and lvis:
        raise ValueError("LVIS evaluation (AP_r / AP_c / AP_f) needs faster-coco-eval; pycocotools has no LVIS mode")
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    if not detections:  # both libraries refuse an empty result list; nothing detected scores 0
        result = dict.fromkeys(COCO_STATS, 0.0)
        result["per_class"] = {name: 0.0 for name in names.values()}
        return {**result, **(dict.fromkeys(("APr", "APc", "APf"), 0.0) if lvis else {}), "backend": backend}
    evaluator = _run(dataset, detections, iou_type, backend, lvis)
    result = {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats)}
    if lvis:
        stats = evaluator.stats_as_dict
        result.update(APr=float(stats["APr"]), APc=float(stats["APc"]), APf=float(stats["APf"]))
    result["per_class"] = _per_class_ap(evaluator, names)
    result["backend"] = backend
    return result


def _only_classes(dataset: dict, detections: list[dict], classes) -> tuple[dict, list[dict]]:
    known = {c["name"]: c["id"] for c in dataset["categories"]}
    missing = [n for n in classes if n not in known]
    if missing:
        raise ValueError(f"the ground truth has no categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
    ids = {known[n] for n in classes}
    subset = {**dataset, "categories": [c for c in dataset["categories"] if c["id"] in ids],
              "annotations": [a for a in dataset["annotations"] if a["category_id"] in ids]}
    return subset, [d for d in detections if d["category_id"] in ids]


def _has_faster() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _check_detections(dataset: dict, detections: list[dict], iou_type: str) -> None:
    images = {image["id"] for image in dataset["images"]}
    categories = {c["id"] for c in dataset["categories"]}
    field = "bbox" if iou_type == "bbox" else "segmentation"
    for k, detection in enumerate(detections):
        missing = [key for key in ("image_id", "category_id", "score", field) if key not in detection]
        if missing:
            raise ValueError(f"detection {k} lacks {', '.join(missing)}")
        if detection["image_id"] not in images:
            raise ValueError(f"detection {k} refers to image {detection['image_id']}, not in the ground truth")
        if detection["category_id"] not in categories:
            raise ValueError(f"detection {k} has category {detection['category_id']}, not in the ground truth")


def _run(dataset: dict, detections: list[dict], iou_type: str, backend: str, lvis: bool):
    detections = copy.deepcopy(detections)  # the libraries write ids and areas into them
    quiet = contextlib.redirect_stdout(io.StringIO())
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        with quiet:
            truth = COCO(copy.deepcopy(dataset))
            evaluator = COCOeval_faster(truth, truth.loadRes(detections), iou_type, lvis_style=lvis,
                                        print_function=lambda *args: None)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with quiet:
        truth = COCO()
        truth.dataset = copy.deepcopy(dataset)
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(detections), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _per_class_ap(evaluator, names: dict[int, str]) -> dict[str, float | None]:
    """AP of each category: precision over IoU thresholds and recall, all areas, most detections."""
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    result = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        result[names[category_id]] = float(values.mean()) if values.size else None
    return result
