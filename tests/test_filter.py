"""synthscene filter: views of a run that keep instances and samples by their scores."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.codecs import IGNORE_INDEX
from synthscene.filter import Condition, FilterError, filter_run
from synthscene.formats.export import export_run
from synthscene.store import open_run


def test_conditions_compose_and_refuse_unknown_fields():
    values = {"score": np.array([0.2, 0.6, 0.9, np.nan], np.float32), "category": np.array(["a", "b", "a", "c"]),
              "area": np.array([5, 50, 500, 10])}
    fields = list(values)
    assert Condition("score >= 0.5", fields, "instance")(values, 4).tolist() == [False, True, True, False]
    assert Condition("category in ('a', 'c') and not area < 10", fields, "instance")(values, 4).tolist() == \
        [False, False, True, True]
    assert Condition("0.1 < score < 0.7 or category == 'c'", fields, "instance")(values, 4).tolist() == \
        [True, True, False, True]  # NaN satisfies no comparison, but the 'or' still holds
    assert Condition("score > -1", fields, "instance")(values, 4).tolist() == [True, True, True, False]
    with pytest.raises(FilterError, match="unknown field 'scor'.*fields are: area, category, score"):
        Condition("scor > 1", fields, "instance")
    for bad in ("__import__('os')", "score.real > 1", "score >", "score + 1 > 2", "score"):
        with pytest.raises(FilterError):
            Condition(bad, fields, "instance")


def test_a_view_keeps_what_passes_and_exports_like_a_run(tiny_run, tmp_path):
    source = open_run(tiny_run)
    samples = {s.index: s for s in source.samples()}
    scores = np.concatenate([s.instances.score for s in samples.values()])
    assert len(scores) >= 4, "the tiny run should have instances"
    threshold = float(np.median(scores))
    view = filter_run(tiny_run, tmp_path / "view", where=f"score >= {threshold}", samples_where="count >= 1")
    opened = open_run(tmp_path / "view")
    kept = list(opened.items())
    assert view["instances_kept"] == int((scores >= threshold).sum()) == sum(len(s.instances) for s, _ in kept)
    assert view["samples_kept"] == len(kept)
    for sample, files in kept:
        original = samples[sample.index]
        assert (sample.instances.score >= threshold).all() and len(sample.instances) >= 1
        assert files.image.is_relative_to(tiny_run)  # the image was not copied
        assert np.array_equal(sample.image, original.image)
        removed = original.instances[original.instances.score < threshold]
        if len(removed):  # a removed instance's pixels are no longer trusted: ignore
            assert (sample.semantic[removed.masks.any(axis=0)] == IGNORE_INDEX).all()
        untouched = ~original.instances.masks.any(axis=0) if len(original.instances) else np.ones_like(sample.semantic, bool)
        assert np.array_equal(sample.semantic[untouched], original.semantic[untouched])
    card = json.loads((tmp_path / "view" / "dataset_card.json").read_text())
    assert card["instances"] == view["instances_kept"] and card["filter"]["where"] == f"score >= {threshold}"
    assert json.loads((tmp_path / "view" / "run.json").read_text())["filter"]["samples_kept"] == len(kept)
    coco = json.loads((export_run(tmp_path / "view", "coco", tmp_path / "coco") / "annotations" /
                       "instances.json").read_text())
    assert len(coco["annotations"]) == view["instances_kept"] and len(coco["images"]) == len(kept)
    # a view of the view reads its images from the first run, and copying makes it stand alone
    again = filter_run(tmp_path / "view", tmp_path / "view2", where="area >= 1", copy_images=True)
    assert again["instances_kept"] == view["instances_kept"]
    for _, files in open_run(tmp_path / "view2").items():
        assert files.image.is_relative_to(tmp_path / "view2")


def test_filter_cli_errors_leave_nothing(tiny_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "v"
    result = runner.invoke(app, ["filter", "--in", str(tiny_run), "--out", str(out), "--where", "confidence > 1"])
    assert result.exit_code == 2 and "unknown field 'confidence'" in result.output and "class_margin" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["filter", "--in", str(tiny_run), "--out", str(out), "--samples-where", "score > 1"])
    assert result.exit_code == 2 and "count, index, removed" in result.output and not out.exists()
    result = runner.invoke(app, ["filter", "--in", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 2 and "--where" in result.output and not out.exists()
    result = runner.invoke(app, ["filter", "--in", str(tiny_run), "--out", str(out), "--where", "score >= 0"])
    assert result.exit_code == 0, result.output
    assert "instances in" in result.output
