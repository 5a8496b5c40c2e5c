"""method: grounding on the tiny pipeline with a briefly trained head: box-only samples
with scores through the engine, COCO export, masks by GrabCut, bad heads refused."""

import json

import numpy as np
import pytest

from synthscene.formats.export import export_run
from synthscene.spec import SpecError, validate_spec
from synthscene.store import open_run
from tests.helpers import BASE, NOVEL, make_run


def _spec(pipeline, head, **grounding):
    return validate_spec({
        "name": "grounding", "method": "grounding", "model": str(pipeline), "num_samples": 5, "shard_size": 3,
        "batch_size": 3, "classes": [{"name": n} for n in BASE + NOVEL], "sampler": {"steps": 2, "guidance": 3.0},
        "grounding": {"head": str(head), "novel_classes": list(NOVEL), "score_threshold": 0.0, **grounding},
    })


def test_boxes_with_scores_from_the_head(tiny_pipeline_dir, grounding_head, tmp_path):
    run = make_run(_spec(tiny_pipeline_dir, grounding_head, max_instances=3), tmp_path / "run")
    samples = list(open_run(run).samples())
    assert len(samples) == 5
    for sample in samples:
        inst = sample.instances
        assert sample.semantic is None and inst.masks is None and 1 <= len(inst) <= 3
        assert set(inst.class_id.tolist()) <= set(sample.class_ids)  # only the prompt's classes
        assert np.all(np.diff(inst.score) <= 0) and np.all((inst.score >= 0) & (inst.score <= 1))
        assert np.all(inst.xyxy >= 0) and np.all(inst.xyxy[:, 2:] <= sample.width)
    card = json.loads((run / "dataset_card.json").read_text())
    assert card["method"] == "grounding" and card["per_class"]["star"]["novel"] and not card["per_class"]["ball"]["novel"]
    assert "star (novel)" in (run / "dataset_card.md").read_text()
    coco = json.loads((export_run(run, "coco", tmp_path / "coco") / "annotations" / "instances.json").read_text())
    assert len(coco["annotations"]) == sum(len(s.instances) for s in samples)
    assert all("segmentation" not in a or not a["segmentation"] for a in coco["annotations"])
    with pytest.raises(ValueError, match="without semantic masks"):
        export_run(run, "voc", tmp_path / "voc")
    # the same spec gives the same bytes again
    again = make_run(_spec(tiny_pipeline_dir, grounding_head, max_instances=3), tmp_path / "again")
    assert [s.instances.xyxy.tolist() for s in open_run(again).samples()] == [s.instances.xyxy.tolist()
                                                                              for s in samples]


def test_grabcut_masks_inside_the_boxes(tiny_pipeline_dir, grounding_head, tmp_path):
    run = make_run(_spec(tiny_pipeline_dir, grounding_head, max_instances=2, masks="grabcut"), tmp_path / "run")
    for sample in open_run(run).samples():
        inst = sample.instances
        assert inst.masks is not None and inst.masks.shape == (len(inst), sample.height, sample.width)
        for mask, (x0, y0, x1, y1) in zip(inst.masks, inst.xyxy):
            ys, xs = np.nonzero(mask)
            if len(xs):
                assert xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1)
                assert ys.min() >= np.floor(y0) and ys.max() < np.ceil(y1)


def test_bad_grounding_specs(tiny_pipeline_dir, grounding_head, tmp_path):
    with pytest.raises(SpecError, match="novel classes not in the taxonomy"):
        validate_spec({**_spec(tiny_pipeline_dir, grounding_head).model_dump(mode="json"),
                       "grounding": {"head": str(grounding_head), "novel_classes": ["kite"]}})
    with pytest.raises(SpecError, match="masks: sam needs sam_model"):
        _spec(tiny_pipeline_dir, grounding_head, masks="sam")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="has no head.json"):
        make_run(_spec(tiny_pipeline_dir, tmp_path), out)
    info = json.loads((grounding_head / "head.json").read_text())
    other = tmp_path / "other-head"
    other.mkdir()
    (other / "head.safetensors").write_bytes((grounding_head / "head.safetensors").read_bytes())
    info["head"]["text_dim"] += 1
    (other / "head.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="belongs to another model"):
        make_run(_spec(tiny_pipeline_dir, other), out)
    info["head"]["text_dim"] -= 1
    info["head"]["levels"][0][2] += 2  # features of another layout (another UNet, or guidance off)
    (other / "head.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="another model or feature layout"):
        make_run(_spec(tiny_pipeline_dir, other), out)
    assert not out.exists()
