"""Downstream training: mixed sources, exact resume, 255 handling, detector + segmenter + eval."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synthscene.codecs import save_semantic_png
from synthscene.formats.export import export_run
from synthscene.train import downstream
from synthscene.train.data import DatasetError, Source, open_sources
from synthscene.train.downstream import DownstreamConfig, evaluate_trained, train_downstream
from tests.helpers import sigkill_when


def _semantic_config(world, **overrides):
    values = {"task": "semantic", "model": "lraspp_mobilenet_v3_large", "sources": [Source(str(world / "train"))],
              "steps": 20, "batch_size": 8, "learning_rate": 0.05, "warmup_steps": 2, "image_size": 32,
              "checkpoint_every": 5}
    values.update(overrides)
    return DownstreamConfig(**values)


@pytest.mark.slow
def test_semantic_training_learns_and_evaluates(small_world, tmp_path):
    out = train_downstream(_semantic_config(small_world), tmp_path / "seg", progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    scores = evaluate_trained(out, small_world / "val")
    assert 0.0 <= scores["miou"] <= 1.0 and set(scores["per_class"]) == {"background", "ball", "leaf", "box",
                                                                          "hat", "star", "ring"}


def _checkpoint_tensors(run, step):
    state = torch.load(run / "checkpoints" / f"step-{step:07d}.pt", weights_only=True)
    return {f"{part}.{k}": v for part in ("model",) for k, v in state[part].items()}


def _train_command(config, out):
    source = config.sources[0].path
    return [sys.executable, "-m", "synthscene.cli", "train", "--task", config.task, "--model", config.model,
            "--data", source, "--out", str(out), "--steps", str(config.steps), "--batch-size",
            str(config.batch_size), "--learning-rate", str(config.learning_rate), "--warmup-steps",
            str(config.warmup_steps), "--image-size", str(config.image_size), "--checkpoint-every",
            str(config.checkpoint_every)]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "semantic"])
def test_kill_9_then_resume_gives_the_same_checkpoints_and_weights(task, small_world, tmp_path):
    """torchvision's RPN / RoI samplers draw from the global generator: seeded per step, a
    detector resumes exactly, as a segmenter does."""
    if task == "detection":
        config = DownstreamConfig(task="detection", model="fasterrcnn_mobilenet_v3_large_fpn",
                                  sources=[Source(str(small_world / "annotations" / "instances_train.json"))],
                                  steps=16, batch_size=2, learning_rate=0.02, warmup_steps=1, image_size=32,
                                  checkpoint_every=4)
    else:
        config = _semantic_config(small_world, steps=16, checkpoint_every=4, batch_size=4)
    straight = train_downstream(config, tmp_path / "straight", progress=False)
    killed = tmp_path / "killed"
    sigkill_when(_train_command(config, killed), lambda: (killed / "checkpoints" / "step-0000004.pt").exists())
    assert not (killed / "model.safetensors").exists()  # killed mid-run, not after it
    resumed = train_downstream(config, killed, resume=True, progress=False)
    for step in (8, 12, 16):
        a, b = _checkpoint_tensors(straight, step), _checkpoint_tensors(resumed, step)
        assert all(torch.equal(a[k], b[k]) for k in a), f"checkpoint {step} differs"
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    straight_log = (straight / "train_log.jsonl").read_text()
    assert (resumed / "train_log.jsonl").read_text() == straight_log and len(straight_log.splitlines()) == 16


def test_a_crash_before_the_first_checkpoint_resumes_with_one_log_row_per_step(small_world, tmp_path, monkeypatch):
    config = _semantic_config(small_world, steps=6, checkpoint_every=100, batch_size=2)
    real_loss = downstream._loss

    def crash_at_step_3(model, batch, config, calls=[]):  # noqa: B006 (counts the calls)
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return real_loss(model, batch, config)

    monkeypatch.setattr(downstream, "_loss", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_downstream(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    rows = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(rows) == 3
    (tmp_path / "run" / "train_log.jsonl").write_text("\n".join(rows) + '\n{"step": 3, "lo')  # cut by a kill
    train_downstream(config, tmp_path / "run", resume=True, progress=False)
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(6))


def test_a_damaged_log_line_before_the_last_is_an_error(tmp_path):
    from synthscene.train.loop import truncate_log

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        truncate_log(log, 1)


def test_sources_mix_by_weight_and_match_classes_by_name(small_world, tiny_run, tmp_path):
    voc = export_run(tiny_run, "voc", tmp_path / "voc")  # classes ball, leaf, box
    data = open_sources("semantic", [Source.parse(f"{small_world / 'train'}:3"), Source.parse(str(voc))])
    assert data.class_names[:3] == ["ball", "leaf", "box"]
    draws = data.draw(4000, torch.Generator().manual_seed(0))
    first = len(data.dataset.datasets[0])
    assert abs(np.mean([i < first for i in draws]) - 0.75) < 0.03
    # a synthetic "box" pixel keeps the world's id for box
    _, mask = data.dataset[first]
    assert set(np.unique(mask.numpy())) <= {0, 1, 2, 3, 255}
    with pytest.raises(DatasetError, match="first source does not"):
        open_sources("semantic", [Source(str(voc)), Source(str(small_world / "train"))])


def test_bad_sources(small_world, tmp_path):
    truth = json.loads((small_world / "annotations" / "instances_val.json").read_text())
    empty = tmp_path / "annotations" / "empty.json"
    empty.parent.mkdir()
    empty.write_text(json.dumps({**truth, "annotations": []}))
    with pytest.raises(DatasetError, match="no annotations"):
        open_sources("detection", [Source(str(empty))])
    moved = tmp_path / "annotations" / "moved.json"
    moved.write_text(json.dumps(truth))  # its images are not next to it
    with pytest.raises(DatasetError, match="missing on disk"):
        open_sources("detection", [Source(str(moved))])
    with pytest.raises(DatasetError, match="must be > 0"):
        Source.parse("data:0")
    with pytest.raises(ValueError, match="not a semantic model"):
        DownstreamConfig(task="semantic", model="maskrcnn_mobilenet_v3_large_fpn", sources=[Source("x")])


def test_all_ignore_masks_give_zero_loss_not_nan(tmp_path):
    root = tmp_path / "voc"
    for folder in ("JPEGImages", "SegmentationClass"):
        (root / folder).mkdir(parents=True)
    (root / "labels.txt").write_text("background\nball\n")
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "JPEGImages" / "a.png")
    save_semantic_png(np.full((16, 16), 255, np.uint8), root / "SegmentationClass" / "a.png")
    config = DownstreamConfig(task="semantic", model="lraspp_mobilenet_v3_large", sources=[Source(str(root))],
                              steps=2, batch_size=2, image_size=16, warmup_steps=0)
    out = train_downstream(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [0.0, 0.0] and rows[0]["labelled_pixels"] == 0


@pytest.mark.slow
def test_detector_trains_and_scores_with_both_ap_kinds(small_world, tmp_path):
    config = DownstreamConfig(task="detection", model="maskrcnn_mobilenet_v3_large_fpn",
                              sources=[Source(str(small_world / "annotations" / "instances_train.json"))],
                              steps=16, batch_size=2, learning_rate=0.02, warmup_steps=1, image_size=64)
    out = train_downstream(config, tmp_path / "det", progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    scores = evaluate_trained(out, small_world / "annotations" / "instances_val.json")
    assert set(scores) == {"bbox", "segm"}
    assert all(0.0 <= scores[k]["AP"] <= 1.0 for k in scores)


def test_mobile_detector_reads_stride_8_features_for_small_objects():
    from synthscene.train.models import build_model

    model = build_model("maskrcnn_mobilenet_v3_large_fpn", 7, min_size=96, max_size=192).eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 96, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(12, 12), (6, 6), (3, 3), (2, 2)]
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * 4
    for pool in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        assert pool.featmap_names == ["0", "1", "2"] and pool.sampling_ratio == 1


def test_image_names_may_not_leave_the_dataset_root(small_world, tmp_path):
    truth = json.loads((small_world / "annotations" / "instances_val.json").read_text())
    truth["images"][0]["file_name"] = "../../etc/passwd"
    path = tmp_path / "annotations" / "escape.json"
    path.parent.mkdir()
    path.write_text(json.dumps(truth))
    with pytest.raises(DatasetError, match="outside"):
        open_sources("detection", [Source(str(path))])


@pytest.mark.slow
def test_experiment_smoke_profile_writes_results(tmp_path):
    from synthscene.experiment import run_experiment

    records = run_experiment("smoke", tmp_path / "exp", progress=False)
    out = tmp_path / "exp"
    assert json.loads((out / "results.json").read_text()) == records
    assert {r["metric"] for r in records} == {"box_ap", "mask_ap", "miou"}
    assert {r["setting"] for r in records} == {"real", "synthetic", "real+synthetic"}
    for r in records:
        assert set(r) == {"metric", "real_fraction", "setting", "mean", "std", "seeds"}
        assert 0.0 <= r["mean"] <= 1.0 and len(r["seeds"]) == 1
    assert "| miou |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_open_vocab_smoke_profile_writes_results(tmp_path):
    from synthscene.experiment_open_vocab import METRICS, SETTINGS, run_open_vocab, without_annotations_of

    records = run_open_vocab("open-vocab-smoke", tmp_path / "exp", progress=False)
    assert {(r["setting"], r["metric"]) for r in records} == {(s, m) for s in SETTINGS for m in METRICS}
    assert all(0.0 <= r["mean"] <= 1.0 for r in records)
    for name in ("results.json", "results.md", "results.png", "grounding/head.safetensors"):
        assert (tmp_path / "exp" / name).is_file(), name
    base = json.loads((tmp_path / "exp" / "data" / "world" / "annotations" / "instances_train_base.json").read_text())
    novel_ids = {c["id"] for c in base["categories"] if c["name"] in ("star", "ring")}
    assert len(base["categories"]) == 6 and not [a for a in base["annotations"] if a["category_id"] in novel_ids]
    assert without_annotations_of(base, ["ball"])["categories"] == base["categories"]


def test_detection_on_a_subset_of_the_classes(small_world, tmp_path):
    """A teacher for the grounding head: trained on the base classes only."""
    from typer.testing import CliRunner

    from synthscene.cli import app

    data = str(small_world / "annotations" / "instances_train.json")
    base = ["train", "--task", "detection", "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--data", data,
            "--steps", "1", "--batch-size", "2", "--image-size", "32"]
    runner = CliRunner()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "base"), "--classes", "ball,leaf,box,hat"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "base" / "classes.json").read_text()) == ["background", "ball", "leaf", "box", "hat"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--classes", "ball,kite"])
    assert result.exit_code == 2 and "no category kite" in result.output and not (tmp_path / "bad").exists()


def _run_derived_smoke(method: str, tmp_path) -> Path:
    """A derived-data smoke profile's run; its records, table and plot checked. Returns its folder."""
    from synthscene.experiment_derived import DERIVED_NAMES, METRICS, run_derived_experiment, settings_of

    records = run_derived_experiment(f"{method}-smoke", tmp_path / "exp", progress=False)
    out = tmp_path / "exp"
    assert {(r["setting"], r["metric"]) for r in records} == {(s, m) for s in settings_of(method) for m in METRICS}
    assert all(0.0 <= r["mean"] <= 1.0 and len(r["seeds"]) == 1 for r in records)
    assert f"| real+{DERIVED_NAMES[method]} |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    return out


@pytest.mark.slow
def test_restyle_smoke_profile_writes_results(tmp_path):
    from synthscene.store import open_run

    out = _run_derived_smoke("restyle", tmp_path)
    # the restyled copies are of the real subset's images and keep their labels
    real = json.loads((out / "data" / "real-10pct" / "annotations" / "instances.json").read_text())
    restyled = open_run(out / "data" / "restyled")
    assert 1 <= len(restyled.tasks()) <= len(real["images"])
    exported = json.loads((out / "data" / "restyled-coco" / "annotations" / "instances.json").read_text())
    assert len(exported["images"]) == len(restyled.tasks())
    per_image = {i["id"]: sum(a["image_id"] == i["id"] for a in real["annotations"]) for i in real["images"]}
    assert all(t.source_index + 1 in per_image for t in restyled.tasks())
    assert len(exported["annotations"]) == sum(per_image[t.source_index + 1] for t in restyled.tasks())


@pytest.mark.slow
def test_layout_smoke_profile_rearranges_the_real_subsets_instances(tmp_path):
    from synthscene.store import open_run

    out = _run_derived_smoke("layout", tmp_path)
    # one layout per real image, made of the real subset's shapes only: every sampled object
    # is a shape of the pool (a real instance of the subset), and the export holds them all
    real = json.loads((out / "data" / "real-10pct" / "annotations" / "instances.json").read_text())
    run = open_run(out / "data" / "layout")
    tasks = run.tasks()
    assert len(tasks) == len(real["images"])
    assert all(1 <= len(t.placements) <= 4 for t in tasks)
    assert Path(run.spec.layout.source.path) == out / "data" / "real-10pct" / "annotations" / "instances.json"
    exported = json.loads((out / "data" / "layout-coco" / "annotations" / "instances.json").read_text())
    assert len(exported["images"]) == len(tasks)
    assert len(exported["annotations"]) == sum(len(t.placements) for t in tasks)


@pytest.mark.slow
def test_loader_workers_train_the_same_weights_as_none(small_world, tmp_path):
    """Batches are drawn in the main process per step: decoding them in worker processes
    changes nothing, bit for bit."""
    from safetensors.torch import load_file

    config = DownstreamConfig(task="detection", model="fasterrcnn_mobilenet_v3_large_fpn",
                              sources=[Source(str(small_world / "annotations" / "instances_train.json"))],
                              steps=4, batch_size=2, learning_rate=0.02, warmup_steps=1, image_size=32,
                              checkpoint_every=100)
    plain = load_file(train_downstream(config, tmp_path / "plain", progress=False) / "model.safetensors")
    loaded = load_file(train_downstream(config, tmp_path / "workers", progress=False, workers=2) / "model.safetensors")
    assert plain.keys() == loaded.keys() and all(torch.equal(plain[k], loaded[k]) for k in plain)
    assert (tmp_path / "plain" / "train_log.jsonl").read_text() == (tmp_path / "workers" / "train_log.jsonl").read_text()
    with pytest.raises(ValueError, match="workers"):
        train_downstream(config, tmp_path / "bad", progress=False, workers=-1)


def test_sparse_cells_follow_one_steps_rule_and_weight_rule(tmp_path):
    from synthscene.experiment_sparse import SPARSE_PROFILES, mixed_sources, run_sparse_experiment, summarise

    detection = SPARSE_PROFILES["sparse"].steps["detection"]
    assert detection.steps(100, 4) == (250, 12)  # four epochs of 100 images = 100 steps, raised to the minimum
    assert detection.steps(282, 4) == (282, 14)
    assert detection.steps(10_000, 4) == (400, 20)  # clipped
    semantic = SPARSE_PROFILES["sparse"].steps["semantic"]
    assert semantic.steps(900, 16) == (900, 45) and semantic.steps(500, 16) == (600, 30)  # its own, cheaper rule
    real, synthetic = Source("real"), [("a", 300), ("b", 100)]
    auto = mixed_sources("real+synthetic-auto", real, 100, synthetic, [])
    shares = np.array([s.weight for s in auto]) / sum(s.weight for s in auto)
    assert shares.tolist() == pytest.approx([0.2, 0.6, 0.2])  # every image equally likely
    fixed = mixed_sources("real+synthetic", real, 100, synthetic, [])
    assert [s.weight for s in fixed] == [1.0, 0.5, 0.5]  # half of every batch synthetic
    records = summarise({("miou", 0.1, "real"): {0: 0.30, 1: 0.40}, ("miou", 0.1, "real+synthetic"): {0: 0.35, 1: 0.50}})
    mixed = next(r for r in records if r["setting"] == "real+synthetic")
    assert mixed["difference"]["seeds"] == pytest.approx([0.05, 0.10])
    assert mixed["difference"]["std"] == pytest.approx(0.025) and "difference" not in records[0]
    with pytest.raises(ValueError, match="unknown task"):
        run_sparse_experiment("sparse-smoke", tmp_path / "exp", tasks=("depth",), progress=False)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_sparse_experiment("sparse-smoke", tmp_path / "exp", jobs=0, progress=False)
    assert not (tmp_path / "exp").exists()


def test_sparse_cells_in_two_processes_score_as_in_one(small_world, tmp_path):
    from synthscene.experiment_sparse import train_cells

    cells = [(seed, _semantic_config(small_world, seed=seed, steps=3), tmp_path / f"{jobs}" / f"seed{seed}")
             for seed in (0, 1) for jobs in (1, 2)]
    one = dict(train_cells([c for c in cells if c[2].parent.name == "1"], small_world, jobs=1, progress=False))
    two = dict(train_cells([c for c in cells if c[2].parent.name == "2"], small_world, jobs=2, progress=False))
    # tests run with one torch thread, so each spawned process gets one too: the same float sums
    assert one == two and set(one) == {0, 1}


@pytest.mark.slow
def test_sparse_smoke_profile_writes_results(tmp_path):
    from synthscene.experiment_sparse import MIXED, run_sparse_experiment

    records = run_sparse_experiment("sparse-smoke", tmp_path / "exp", progress=False)
    out = tmp_path / "exp"
    assert json.loads((out / "results.json").read_text()) == records
    assert {r["setting"] for r in records} == {"real", "synthetic", *MIXED}
    for r in records:
        assert len(r["seeds"]) == 1 and 0.0 <= r["mean"] <= 1.0
        assert ("difference" in r) == (r["setting"] in MIXED)
    assert (out / "data" / "text2labels-filtered" / "view.json").is_file()
    def steps(cell):
        return json.loads((out / "models" / f"{cell}-seed0" / "config.json").read_text())["steps"]

    # every cell of a fraction trains as long as its largest: ceil(0.5 epochs x (4 real + 6 synthetic) / batch),
    # also the real-only cell, which alone would get ceil(0.5 x 4 / batch) = 1
    assert {steps(f"semantic-10pct-{s}") for s in ("real", *MIXED)} == {2}  # batch 4
    assert {steps(f"detection-10pct-{s}") for s in ("real", *MIXED)} == {3}  # batch 2
    assert steps("detection-0pct-synthetic") == 2
    assert "paired difference" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
