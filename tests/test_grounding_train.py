"""train-grounding end to end on a tiny generator and a briefly trained teacher: every
stage's files, exact resume after a crash, and one clear error per bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synthscene.formats.coco import CocoError, keep_categories
from synthscene.grounding import train as grounding_train
from synthscene.grounding.train import GroundingTrainConfig, plan_prompts, train_grounding
from synthscene.store import open_run
from tests.helpers import BASE, NOVEL, crash_after_checkpoint, make_run


def _config(pipeline, teacher, **overrides):
    values = {"model": str(pipeline), "teacher": str(teacher), "base_classes": BASE, "novel_classes": NOVEL,
              "images_per_base_class": 2, "images_per_novel_class": 2, "steps_per_image": 2, "guidance": 3.0,
              "generation_batch": 5, "teacher_threshold": 0.0, "novel_threshold": 0.0, "steps": 6, "batch_size": 3,
              "checkpoint_every": 3, "warmup_steps": 1,
              "head": {"width": 16, "queries": 4, "layers": 1, "heads": 2}}
    values.update(overrides)
    return GroundingTrainConfig(**values)


def test_prompts_name_one_or_two_classes_of_their_group(tiny_pipeline_dir, teacher):
    items = plan_prompts(_config(tiny_pipeline_dir, teacher, images_per_base_class=20))
    assert len(items) == 4 * 20 + 2 * 2
    base = [i for i in items if i.group == "base"]
    assert all(set(i.classes) <= set(BASE) and i.classes[0] in i.prompt for i in base)
    assert 0.3 < sum(len(i.classes) == 2 for i in base) / len(base) < 0.7
    assert all(set(i.classes) <= set(NOVEL) for i in items if i.group == "novel")
    assert plan_prompts(_config(tiny_pipeline_dir, teacher, images_per_base_class=20)) == items


def test_a_flipped_image_has_mirrored_features_and_boxes():
    features = torch.zeros(2, 3, 4, 8)
    features[:, :, :, 0] = 1.0  # something at the left edge of both images
    cache = grounding_train.FeatureCache([7, 9], [features], evidence=features[:, :2].clone())
    assert cache.levels == ((4, 8, 3),)
    kept, flipped = cache.batch([9, 7], torch.tensor([False, True]))[0]
    assert kept.dtype == torch.float32 and (kept[:, :, 0] == 1).all() and (flipped[:, :, -1] == 1).all()
    assert flipped[:, :, :-1].abs().sum() == 0
    evidence = cache.evidence_batch([9, 7], torch.tensor([False, True]), width=1)
    assert evidence.shape == (2, 1, 4, 8) and (evidence[0, :, :, 0] == 1).all() and (evidence[1, :, :, -1] == 1).all()
    assert cache.evidence[1, :, :, 0].eq(1).all()  # the cache itself is not flipped
    box = [[0.0, 2.0, 4.0, 6.0]]  # xyxy pixels of a 16 x 16 image
    plain, mirrored = (grounding_train._targets(box, [0], (16, 16), flip)["boxes"][0] for flip in (False, True))
    assert plain.tolist() == [0.125, 0.25, 0.25, 0.25] and mirrored.tolist() == [0.875, 0.25, 0.25, 0.25]
    # the prompt named two classes, the pseudo-labels boxed the first only
    assert grounding_train._targets(box, [0], (16, 16), named=2)["unlabelled"].tolist() == [1]
    assert grounding_train._targets(box * 2, [1, 0], (16, 16), named=2)["unlabelled"].tolist() == []


@pytest.mark.slow
def test_train_grounding_stages_and_exact_resume(tiny_pipeline_dir, teacher, tmp_path, monkeypatch):
    config = _config(tiny_pipeline_dir, teacher)
    straight = train_grounding(config, tmp_path / "straight", progress=False)
    for name in ("config.json", "run.json", "prompts.jsonl", "pseudo_labels.json", "train_log.jsonl",
                 "head.safetensors", "head_ema.safetensors", "head.json"):
        assert (straight / name).is_file(), name
    assert len(list((straight / "generated").glob("shard-*.npz"))) == 3  # 12 images in fives
    labels = json.loads((straight / "pseudo_labels.json").read_text())
    assert labels["images"] == 8 and labels["dropped_without_box"] + len(labels["labels"]) == 8
    rows = [json.loads(r) for r in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [r["group"] for r in rows] == ["base"] * 4 + ["novel", "base"]  # alternating from half the schedule
    info = json.loads((straight / "head.json").read_text())
    with np.load(straight / "generated" / "shard-00000.npz") as shard:
        assert info["image_size"] == list(shard["images"].shape[1:3])
    assert info["novel_classes"] == list(NOVEL)

    crash_after_checkpoint(monkeypatch, grounding_train, 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_grounding(config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    resumed = train_grounding(config, tmp_path / "resumed", resume=True, progress=False)
    for name in ("head.safetensors", "head_ema.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (straight / "train_log.jsonl").read_text() == (resumed / "train_log.jsonl").read_text()
    # a head retrained with other settings from the same images
    retrained = train_grounding(_config(tiny_pipeline_dir, teacher, steps=4), tmp_path / "retrained",
                                progress=False, images_from=straight)
    for name in ("shard-00000.npz", "shard-00002.npz"):
        assert (retrained / "generated" / name).read_bytes() == (straight / "generated" / name).read_bytes()
    assert (retrained / "pseudo_labels.json").read_text() == (straight / "pseudo_labels.json").read_text()
    with pytest.raises(ValueError, match="its images_per_base_class differ"):
        train_grounding(_config(tiny_pipeline_dir, teacher, images_per_base_class=3), tmp_path / "other",
                        progress=False, images_from=straight)
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="configuration differs"):
        train_grounding(_config(tiny_pipeline_dir, teacher, steps=7), tmp_path / "resumed", resume=True,
                        progress=False)


def test_bad_inputs_fail_before_anything_is_written(tiny_pipeline_dir, teacher, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="does not know the base class"):
        train_grounding(_config(tiny_pipeline_dir, teacher, base_classes=("ball", "kite")), out, progress=False)
    with pytest.raises(ValueError, match="knows the novel class"):
        train_grounding(_config(tiny_pipeline_dir, teacher, base_classes=("ball",), novel_classes=("leaf",)), out,
                        progress=False)
    with pytest.raises(ValueError, match="both base and novel"):
        _config(tiny_pipeline_dir, teacher, novel_classes=("ball",))
    with pytest.raises(FileNotFoundError, match="not a finished synthscene train run"):
        train_grounding(_config(tiny_pipeline_dir, tmp_path), out, progress=False)
    assert not out.exists()
    with pytest.raises(CocoError, match="no category kite"):
        keep_categories({"categories": [{"id": 1, "name": "ball"}], "annotations": []}, ["kite"])


def test_command_line_reports_bad_input_in_one_line(tiny_pipeline_dir, teacher, tmp_path):
    from typer.testing import CliRunner

    from synthscene.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    settings = tmp_path / "settings.yaml"
    settings.write_text("images_per_base_class: 1\nimages_per_novel_class: 1\nsteps_per_image: 2\n")
    base = ["train-grounding", "--model", str(tiny_pipeline_dir), "--out", str(out), "--config", str(settings)]
    result = runner.invoke(app, [*base, "--teacher", str(teacher), "--base", "ball,kite", "--novel", "star"])
    assert result.exit_code == 2 and "does not know the base class(es) kite" in result.output
    result = runner.invoke(app, [*base, "--teacher", str(teacher), "--base", "ball", "--novel", "ball"])
    assert result.exit_code == 2 and "both base and novel" in result.output
    settings.write_text("learning_rate: -1\n")
    result = runner.invoke(app, [*base, "--teacher", str(teacher), "--base", "ball"])
    assert result.exit_code == 2 and "learning_rate" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_a_head_reading_class_evidence_trains_and_labels(tiny_pipeline_dir, teacher, tmp_path):
    from synthscene.grounding.evidence import class_evidence
    from synthscene.models.load import load_pipeline
    from tests.test_grounding import _spec

    config = _config(tiny_pipeline_dir, teacher, steps=4, ignore_unboxed_classes=True,
                     head={"width": 16, "queries": 4, "layers": 1, "heads": 2, "class_evidence": True,
                           "proposal_strides": 5.0})
    run = train_grounding(config, tmp_path / "head", progress=False)
    head = json.loads((run / "head.json").read_text())["head"]
    assert head["class_evidence"] is True and head["proposal_strides"] == 5.0
    # evidence: zero for an image naming one class; opposite for an image naming two
    pipe = load_pipeline(str(tiny_pipeline_dir))
    latents = torch.randn(2, pipe.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    evidence = class_evidence(pipe, latents, [["ball"], ["ball", "leaf"]], [1, 2])
    assert evidence.shape == (2, 2, 8, 8) and evidence[0].abs().sum() == 0
    assert evidence[1].abs().sum() > 0 and torch.allclose(evidence[1, 0], -evidence[1, 1], atol=1e-3)
    assert torch.equal(evidence, class_evidence(pipe, latents, [["ball"], ["ball", "leaf"]], [1, 2]))
    samples = list(open_run(make_run(_spec(tiny_pipeline_dir, run, max_instances=3), tmp_path / "boxes")).samples())
    assert len(samples) == 5 and all(set(s.instances.class_id.tolist()) <= set(s.class_ids) for s in samples)
