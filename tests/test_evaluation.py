"""synthscene.evaluation: AP with faster-coco-eval and pycocotools (same numbers), LVIS groups, mIoU."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.codecs import save_semantic_png
from synthscene.evaluation.detection import evaluate_detections
from synthscene.evaluation.semantic import evaluate_semantic_folders
from tests.coco_eval_helpers import world_as_lvis


def _noisy_detections(dataset, seed=0):
    """The ground truth, jittered, partly dropped, with random scores and false positives."""
    rng = np.random.default_rng(seed)
    detections = []
    for a in dataset["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        box = [x + rng.normal(0, 1), y + rng.normal(0, 1), w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
        category = a["category_id"] if rng.random() > 0.1 else 1 + (a["category_id"] % 6)
        detections.append({"image_id": a["image_id"], "category_id": category, "bbox": box,
                           "segmentation": a["segmentation"], "score": float(rng.random())})
    return detections


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_both_backends_give_the_same_stats(small_world, iou_type):
    truth = json.loads((small_world / "annotations" / "instances_val.json").read_text())
    detections = _noisy_detections(truth)
    faster = evaluate_detections(truth, detections, iou_type, backend="faster")
    reference = evaluate_detections(truth, detections, iou_type, backend="pycocotools")
    assert 0.2 < faster["AP"] < 0.99  # the noise costs something, not everything
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert faster[key] == pytest.approx(reference[key], abs=1e-6), key
    assert faster["per_class"].keys() == {c["name"] for c in truth["categories"]}
    for name, value in faster["per_class"].items():
        assert value == pytest.approx(reference["per_class"][name], abs=1e-6)


def test_scores_of_a_class_subset(small_world):
    """Base / novel scores: the subset's AP is the mean of its classes' APs."""
    truth = json.loads((small_world / "annotations" / "instances_val.json").read_text())
    detections = _noisy_detections(truth, seed=1)
    everything = evaluate_detections(truth, detections, "bbox")
    subset = evaluate_detections(truth, detections, "bbox", classes=["star", "ring"])
    assert subset["per_class"].keys() == {"star", "ring"}
    assert subset["AP"] == pytest.approx(np.mean([everything["per_class"][n] for n in ("star", "ring")]), abs=1e-6)
    with pytest.raises(ValueError, match="no category kite"):
        evaluate_detections(truth, detections, "bbox", classes=["kite"])


def test_lvis_groups_and_empty_or_bad_detections(small_world, tmp_path):
    path = world_as_lvis(small_world, tmp_path / "lvis.json", frequencies=("r", "c", "f"))
    truth = json.loads(path.read_text())
    result = evaluate_detections(path, _noisy_detections(truth), "segm")
    assert {"APr", "APc", "APf"} <= result.keys() and 0 < result["APr"] <= 1
    with pytest.raises(ValueError, match="LVIS"):
        evaluate_detections(path, _noisy_detections(truth), "segm", backend="pycocotools")
    assert evaluate_detections(path, [], "bbox")["AP"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_detections(path, [{"image_id": 10**9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_semantic_miou_ignores_255(tmp_path):
    truth = np.array([[0, 1], [1, 255]], np.uint8)
    prediction = np.array([[0, 1], [0, 1]], np.uint8)
    for folder, mask in (("gt", truth), ("pred", prediction)):
        (tmp_path / folder).mkdir()
        save_semantic_png(mask, tmp_path / folder / "a.png")
    result = evaluate_semantic_folders(tmp_path / "gt", tmp_path / "pred", 2, ["background", "ball"])
    # background: tp 1, union 2; ball: tp 1, union 2 (the 255 pixel is not counted)
    assert result["per_class"] == {"background": 0.5, "ball": 0.5} and result["miou"] == 0.5
    save_semantic_png(np.full((2, 2), 255, np.uint8), tmp_path / "gt" / "b.png")
    with pytest.raises(FileNotFoundError, match="no prediction"):
        evaluate_semantic_folders(tmp_path / "gt", tmp_path / "pred", 2)


def test_cli_eval(small_world, tmp_path):
    truth_path = small_world / "annotations" / "instances_val.json"
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps(_noisy_detections(json.loads(truth_path.read_text()))))
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["eval", "--gt", str(truth_path), "--detections", str(detections),
                                      "--iou-type", "segm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert 0 < json.loads(out.read_text())["AP"] < 1
    result = CliRunner().invoke(app, ["eval", "--gt", str(tmp_path / "missing.json"), "--detections", str(detections)])
    assert result.exit_code == 2 and "does not exist" in result.output
