"""Bad input, tried as a new user would: every case ends in one line that names what is
wrong, exit code 2, no traceback and no output left behind."""

import json
import pickle
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.world.build import write_world


class _NotATensor:
    pass


def printed_lines(output: str) -> list[str]:
    """What a terminal shows: a progress bar that rewrote its line (``\\r``) shows its last
    state, one that cleared itself nothing."""
    return [line.split("\r")[-1].strip() for line in output.split("\n") if line.split("\r")[-1].strip()]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_run):
    """The files of every case: a small world with one truncated image, hostile weights,
    broken YAML, an unfinished run and a run with a cut-off records file."""
    root = tmp_path_factory.mktemp("bad")
    world = write_world(root / "world", n_train=4, n_val=1, seed=2, progress=False)
    broken = root / "broken-world"
    shutil.copytree(world, broken)
    image = sorted((broken / "train" / "images").glob("*.png"))[1]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    torch.save({"model": _NotATensor()}, root / "pickle.pt")
    (root / "garbage.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    save_file({"weight": torch.zeros(2, 2)}, root / "other.safetensors")
    (root / "spec.yaml").write_text("name: x\nclasses: [ball\nseed: 0\n")
    unfinished = root / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    shutil.rmtree(unfinished / "shards" / "shard-00001")
    cut = root / "cut"
    shutil.copytree(tiny_run, cut)
    records = cut / "shards" / "shard-00000" / "records.jsonl"
    records.write_bytes(records.read_bytes()[:-40])
    from synthscene.formats.export import export_run

    yolo = {}
    for case, line in (("arity", "0 0.5 0.5 0.2 0.2 0.9"), ("class", "7 0.5 0.5 0.2 0.2")):
        yolo[case] = export_run(tiny_run, "yolo", root / f"yolo-{case}", yolo_task="detect")
        label = sorted((yolo[case] / "labels" / "train").glob("*.txt"))[2]
        label.write_text(label.read_text() + line + "\n")
    return {"root": root, "world": world, "broken": broken, "image": image, "unfinished": unfinished, "cut": cut,
            "run": tiny_run, "yolo-arity": yolo["arity"], "yolo-class": yolo["class"]}


def _train(paths, out, data="world", *extra):
    return ["train", "--task", "detection", "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--data",
            str(paths[data] / "annotations" / "instances_train.json"), "--out", str(out), "--steps", "1",
            "--batch-size", "2", "--image-size", "32", *extra]


CASES = {
    # name: (arguments given the case files and an output path, words the message holds)
    "truncated image": (lambda p, out: _train(p, out, "broken"), ["corrupt", "train/images/"]),
    "pickle as --init": (lambda p, out: _train(p, out, "world", "--init", str(p["root"] / "pickle.pt")),
                         ["pickle.pt", "Python objects"]),
    "garbage safetensors as --init": (lambda p, out: _train(p, out, "world", "--init",
                                                            str(p["root"] / "garbage.safetensors")),
                                      ["garbage.safetensors", "not a valid safetensors"]),
    "weights of another model as --init": (lambda p, out: _train(p, out, "world", "--init",
                                                                 str(p["root"] / "other.safetensors")),
                                           ["other.safetensors", "another architecture", "missing"]),
    "batch of one for a BatchNorm pooling head": (
        lambda p, out: ["train", "--task", "semantic", "--model", "deeplabv3_mobilenet_v3_large", "--data",
                        str(p["world"] / "train"), "--out", str(out), "--batch-size", "1"], ["batch-size >= 2"]),
    "broken YAML spec": (lambda p, out: ["generate", "--spec", str(p["root"] / "spec.yaml"), "--out", str(out)],
                         ["spec.yaml", "not valid YAML", "line 3"]),
    "broken YAML grounding config": (
        lambda p, out: ["train-grounding", "--teacher", "t", "--base", "ball", "--out", str(out), "--config",
                        str(p["root"] / "spec.yaml")], ["spec.yaml", "not valid YAML"]),
    "export of an unfinished run": (lambda p, out: ["export", "--in", str(p["unfinished"]), "--format", "coco",
                                                    "--out", str(out)], ["1 of 2 shards done", "--resume"]),
    "gallery of an unfinished run": (lambda p, out: ["gallery", "--in", str(p["unfinished"]), "--out", str(out)],
                                     ["1 of 2 shards done", "--allow-partial"]),
    "export of a cut-off records file": (lambda p, out: ["export", "--in", str(p["cut"]), "--format", "coco",
                                                         "--out", str(out)], ["records.jsonl", "line"]),
    "filter naming an unknown field": (lambda p, out: ["filter", "--in", str(p["run"]), "--out", str(out), "--where",
                                                       "objectness > 0.5"],
                                       ["unknown field 'objectness'", "fields are", "score", "class_margin"]),
    "YOLO label line of the wrong arity": (
        lambda p, out: ["train", "--task", "detection", "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--data",
                        str(p["yolo-arity"] / "data.yaml"), "--out", str(out), "--steps", "1"],
        ["0000002.txt", "6 values", "5"]),
    "YOLO class id outside data.yaml": (
        lambda p, out: ["train", "--task", "detection", "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--data",
                        str(p["yolo-class"]), "--out", str(out), "--steps", "1"],
        ["0000002.txt", "class 7", "data.yaml"]),
    "export format that is not known": (lambda p, out: ["export", "--in", str(p["run"]), "--format", "tfrecord",
                                                        "--out", str(out)], ["unknown format 'tfrecord'", "yolo", "hf"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_exit_2_and_no_output(case, bad_inputs, tmp_path):
    arguments, words = CASES[case]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, arguments(bad_inputs, out))
    lines = printed_lines(result.output)
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert not out.exists()


def test_an_unfinished_run_exports_when_allowed_and_says_so(bad_inputs, tmp_path):
    result = CliRunner().invoke(app, ["export", "--in", str(bad_inputs["unfinished"]), "--format", "coco",
                                      "--out", str(tmp_path / "coco"), "--allow-partial"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "coco" / "export.json").read_text())
    assert (record["shards_done"], record["shards"], record["complete"]) == (1, 2, False)
    assert len(json.loads((tmp_path / "coco" / "annotations" / "instances.json").read_text())["images"]) == 4
    result = CliRunner().invoke(app, ["gallery", "--in", str(bad_inputs["unfinished"]), "--out",
                                      str(tmp_path / "gallery"), "--allow-partial"])
    assert result.exit_code == 0 and "1 of 2 shards done" in (tmp_path / "gallery" / "index.html").read_text()


def _limit_file_size():
    # as a full disk does, the OS refuses writes past a size (SIGXFSZ ignored: an error, not a kill)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_refused_write_names_the_path_and_leaves_nothing(tmp_path):
    out = tmp_path / "world"
    result = subprocess.run([sys.executable, "-m", "synthscene.cli", "world", "--out", str(out), "--n-train", "40",
                             "--n-val", "2"], capture_output=True, text=True, preexec_fn=_limit_file_size)
    lines = printed_lines(result.stdout + result.stderr)
    assert result.returncode == 2, result.stderr
    # the progress of the stages that finished, then one line: the file the OS refused
    assert "Traceback" not in result.stderr and lines[-1].startswith("error: cannot write"), lines
    assert str(tmp_path) in lines[-1] and "File too large" in lines[-1] and ".world.tmp" in lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_output_folders_get_the_users_umask(tiny_run, tmp_path):
    result = CliRunner().invoke(app, ["export", "--in", str(tiny_run), "--format", "coco", "--out",
                                      str(tmp_path / "coco")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "coco").stat().st_mode & 0o777 == 0o777 & ~_current_umask()


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_NotATensor()))
    from synthscene.models.weights import WeightsError, read_state_dict

    with pytest.raises(WeightsError, match="Python objects"):
        read_state_dict(path)
    assert Path(path).is_file()


def test_library_messages_do_not_print_before_our_error(tiny_pipeline_dir, tmp_path):
    # a model folder without its UNet weights: diffusers logs a warning and draws its loading
    # bars before it raises; the user sees our one line only
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: x\nmodel: {model}\nnum_samples: 1\nclasses: [{{name: ball}}]\nobjects_per_prompt: [1, 1]\n"
                    "sampler: {steps: 2}\ntext2labels: {cross_resolutions: [8], self_resolution: 8}\n")
    result = subprocess.run([sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(spec), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True)
    lines = printed_lines(result.stdout + result.stderr)
    assert result.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "unet" in lines[0], lines
    assert not (tmp_path / "out").exists()
