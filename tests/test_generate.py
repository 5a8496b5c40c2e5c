import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.generate import generate_images
from synthscene.models.load import ModelNotFoundError, load_pipeline

runner = CliRunner()


def test_generate_writes_images_metadata_and_provenance(tiny_pipeline_dir, tmp_path):
    out = generate_images(["a red ball", "two leaves"], tmp_path / "gen", model=str(tiny_pipeline_dir),
                          images_per_prompt=2, steps=2, batch_size=3, progress=False)
    rows = [json.loads(line) for line in open(out / "metadata.jsonl")]
    assert [r["text"] for r in rows] == ["a red ball"] * 2 + ["two leaves"] * 2
    assert len({r["seed"] for r in rows}) == 4
    assert Image.open(out / rows[0]["file_name"]).size == (16, 16)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["steps"] == 2 and run["versions"]["diffusers"]
    assert run["model"]["unet_sha256_prefix"]


def test_batch_size_does_not_change_images(tiny_pipeline_dir, tmp_path):
    kwargs = dict(model=str(tiny_pipeline_dir), images_per_prompt=3, steps=2, progress=False, seed=4)
    a = generate_images(["a red ball"], tmp_path / "a", batch_size=1, **kwargs)
    b = generate_images(["a red ball"], tmp_path / "b", batch_size=3, **kwargs)
    for i in range(3):
        ia = np.array(Image.open(a / f"images/{i:06d}.png")).astype(int)
        ib = np.array(Image.open(b / f"images/{i:06d}.png")).astype(int)
        assert np.abs(ia - ib).max() <= 1  # batched matmuls may round differently in the last bit


def test_missing_model_says_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFoundError, match="tried local folder .*no_such_model"):
        load_pipeline(str(tmp_path / "no_such_model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"))


def test_cli_prompt_over_77_tokens_leaves_nothing(tiny_pipeline_dir, tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(tiny_pipeline_dir), "--prompt", "ball " * 90,
                                 "--out", str(tmp_path / "gen"), "--steps", "2"])
    assert result.exit_code == 2
    assert "longer than 77 tokens for CLIP" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_model(tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "nope"), "--prompt", "a ball",
                                 "--out", str(tmp_path / "gen")])
    assert result.exit_code == 2 and "tried local folder" in result.output
    assert not (tmp_path / "gen").exists()


def test_cli_unknown_device_leaves_nothing(tiny_pipeline_dir, tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(tiny_pipeline_dir), "--prompt", "a ball",
                                 "--out", str(tmp_path / "gen"), "--device", "gpu0"])
    assert result.exit_code == 2 and "device 'gpu0' is not a torch device" in result.output
    assert not (tmp_path / "gen").exists()


def test_cli_world_negative_count(tmp_path):
    result = runner.invoke(app, ["world", "--out", str(tmp_path / "w"), "--n-train", "-3"])
    assert result.exit_code == 2 and "must be >= 0" in result.output
    assert not (tmp_path / "w").exists()


def test_cli_unwritable_output(tiny_pipeline_dir, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    result = runner.invoke(app, ["world", "--out", str(blocked / "sub"), "--n-train", "2"])
    assert result.exit_code == 2 and "cannot write" in result.output
