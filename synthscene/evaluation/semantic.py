"""Semantic segmentation scores: a confusion matrix and the mean IoU read from it.

    from synthscene.evaluation.semantic import evaluate_semantic_folders
    evaluate_semantic_folders("gt/SegmentationClass", "pred/SegmentationClass", num_classes=7)

Pixels labelled 255 (uncertain / ignore) in either the target or the prediction are not
counted, as in the VOC and Cityscapes protocols.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthscene.codecs import IGNORE_INDEX, load_semantic_png


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """int64 [num_classes, num_classes], rows = target, columns = prediction; pixels
    whose target or prediction is ``ignore_index`` are not counted."""
    keep = (target != ignore_index) & (pred != ignore_index)
    index = target[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean IoU over classes that occur in the target or prediction, and per-class IoU
    (NaN where a class never occurs)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return float(np.nanmean(iou)), iou


def evaluate_semantic_folders(truth_dir: str | Path, prediction_dir: str | Path, num_classes: int,
                              class_names: list[str] | None = None) -> dict:
    """mIoU of the palette PNGs in ``prediction_dir`` against those of the same names in
    ``truth_dir`` (every truth mask needs a prediction of the same size)."""
    truth_dir, prediction_dir = Path(truth_dir), Path(prediction_dir)
    truths = sorted(truth_dir.glob("*.png"))
    if not truths:
        raise FileNotFoundError(f"{truth_dir} holds no .png masks")
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for path in truths:
        predicted = prediction_dir / path.name
        if not predicted.is_file():
            raise FileNotFoundError(f"no prediction {predicted} for {path.name}")
        truth, prediction = load_semantic_png(path), load_semantic_png(predicted)
        if truth.shape != prediction.shape:
            raise ValueError(f"{path.name}: prediction {prediction.shape} and truth {truth.shape} differ in size")
        for mask, name in ((truth, "truth"), (prediction, "prediction")):
            labels = mask[mask != IGNORE_INDEX]
            if labels.size and labels.max() >= num_classes:
                raise ValueError(f"{path.name}: {name} has label {labels.max()} but num_classes is {num_classes}")
        confusion += confusion_matrix(prediction, truth, num_classes, IGNORE_INDEX)
    miou, per_class = miou_from_confusion(confusion)
    names = class_names or [str(i) for i in range(num_classes)]
    return {"miou": miou, "per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, per_class)},
            "images": len(truths)}
