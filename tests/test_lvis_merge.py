"""LVIS export and merging synthetic files into the shapes world's real train split."""

import json

import pytest
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.formats.export import export_run
from synthscene.formats.lvis import frequency_group, lvis_image_fields
from synthscene.formats.merge import MergeError, merge_instances
from synthscene.store import open_run
from tests.coco_eval_helpers import self_ap, world_as_lvis


def test_lvis_image_fields():
    # named 0 and 1, only 0 annotated, 4 classes
    assert lvis_image_fields([0, 1], {0}, 0, 4) == {"neg_category_ids": [], "not_exhaustive_category_ids": [2]}
    assert lvis_image_fields([0, 1], {0}, 0, 4, "unnamed")["neg_category_ids"] == [3, 4]
    assert lvis_image_fields([0, 1], {0, 1}, 2, 4)["not_exhaustive_category_ids"] == [1, 2]  # components dropped
    with pytest.raises(ValueError, match="negatives"):
        lvis_image_fields([0], set(), 0, 4, "all")
    assert [frequency_group(n) for n in (1, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]


def test_lvis_export_counts_and_evaluates(tiny_run, tmp_path):
    out = export_run(tiny_run, "lvis", tmp_path / "lvis")
    path = out / "annotations" / "lvis_v1_train.json"
    data = json.loads(path.read_text())
    records = {r["index"] + 1: r for _, r in open_run(tiny_run).records()}
    for image in data["images"]:
        named = {c + 1 for c in records[image["id"]]["class_ids"]}
        assert image["neg_category_ids"] == []
        assert set(image["not_exhaustive_category_ids"]) <= named
    for category in data["categories"]:
        anns = [a for a in data["annotations"] if a["category_id"] == category["id"]]
        assert category["instance_count"] == len(anns)
        assert category["image_count"] == len({a["image_id"] for a in anns})
        assert category["frequency"] == frequency_group(category["image_count"])
        assert category["synonyms"][0] == category["name"]
    assert "iscrowd" not in data["annotations"][0]
    assert self_ap(path, "segm", lvis=True)["faster"] == pytest.approx(1.0)


@pytest.mark.parametrize("fmt", ["coco", "lvis"])
def test_merge_into_the_real_world_split(small_world, tiny_run, tmp_path, fmt):
    synthetic_dir = export_run(tiny_run, fmt, tmp_path / "synthetic")
    synthetic_path = synthetic_dir / "annotations" / ("instances.json" if fmt == "coco" else "lvis_v1_train.json")
    real_path = small_world / "annotations" / "instances_train.json"
    if fmt == "lvis":
        real_path = world_as_lvis(small_world, tmp_path / "real_lvis.json")
    out = tmp_path / "merged.json"
    result = CliRunner().invoke(app, ["merge", "--real", str(real_path), "--synthetic", str(synthetic_path),
                                      "--out", str(out), "--real-images", str(small_world),
                                      "--synthetic-images", str(synthetic_dir / "images")])
    assert result.exit_code == 0, result.output
    real, synthetic, merged = (json.loads(p.read_text()) for p in (real_path, synthetic_path, out))
    assert len(merged["images"]) == len(real["images"]) + len(synthetic["images"])
    assert len(merged["annotations"]) == len(real["annotations"]) + len(synthetic["annotations"])
    ids = [i["id"] for i in merged["images"]]
    assert len(set(ids)) == len(ids) and min(ids[len(real["images"]):]) > max(i["id"] for i in real["images"])
    assert len({a["id"] for a in merged["annotations"]}) == len(merged["annotations"])
    # tiny run classes ball, leaf, box are the world's categories of the same names
    names = {c["id"]: c["name"] for c in merged["categories"]}
    synthetic_names = {c["id"]: c["name"] for c in synthetic["categories"]}
    tail = merged["annotations"][len(real["annotations"]):]
    assert [names[a["category_id"]] for a in tail] == [synthetic_names[a["category_id"]] for a in synthetic["annotations"]]
    assert merged["categories"] == real["categories"] if fmt == "coco" else len(merged["categories"]) == 6
    if fmt == "lvis":
        ball = next(c for c in merged["categories"] if c["name"] == "ball")
        assert ball["frequency"] == "f"  # the real split's group is kept
        assert ball["instance_count"] == sum(1 for a in merged["annotations"] if a["category_id"] == ball["id"])
    ap = self_ap(out, "segm", lvis=fmt == "lvis")
    assert all(v == pytest.approx(1.0) for v in ap.values()), ap


def test_merge_errors_leave_no_file(small_world, tiny_run, tmp_path):
    synthetic_path = export_run(tiny_run, "coco", tmp_path / "s") / "annotations" / "instances.json"
    real_path = small_world / "annotations" / "instances_train.json"
    synthetic = json.loads(synthetic_path.read_text())
    real = json.loads(real_path.read_text())
    runner = CliRunner()

    def run(real_file, synthetic_file, *extra):
        out = tmp_path / "m.json"
        result = runner.invoke(app, ["merge", "--real", str(real_file), "--synthetic", str(synthetic_file),
                                     "--out", str(out), *extra])
        return result, out

    renamed = {**synthetic, "categories": [{**c, "name": c["name"] + "x", "synonyms": []}
                                         for c in synthetic["categories"]]}
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(renamed))
    result, out = run(real_path, unknown)
    assert result.exit_code == 2 and "not in the real file" in result.output and not out.exists()
    result, out = run(real_path, unknown, "--add-categories")
    assert result.exit_code == 0 and len(json.loads(out.read_text())["categories"]) == 6 + 3
    out.unlink()

    images = str(synthetic_path.parent.parent / "images")
    wrong = json.loads(synthetic_path.read_text())
    wrong["images"][0]["height"] += 1  # the image entry disagrees with its masks
    wrong_path = tmp_path / "wrong.json"
    wrong_path.write_text(json.dumps(wrong))
    result, out = run(real_path, wrong_path, "--synthetic-images", images)
    assert result.exit_code == 2 and "mask" in result.output and not out.exists()
    for annotation in wrong["annotations"]:  # entry and masks agree, the file on disk does not
        if annotation["image_id"] == wrong["images"][0]["id"]:
            annotation["segmentation"]["size"][0] += 1
    wrong_path.write_text(json.dumps(wrong))
    result, out = run(real_path, wrong_path, "--synthetic-images", images)
    assert result.exit_code == 2 and "on disk" in result.output and not out.exists()

    with pytest.raises(MergeError, match="LVIS"):
        merge_instances({**real, "categories": [{**c, "frequency": "f"} for c in real["categories"]]}, synthetic)


def test_image_paths_may_not_leave_the_image_folder(tiny_run, tmp_path):
    from synthscene.formats.merge import check_sizes

    synthetic_dir = export_run(tiny_run, "coco", tmp_path / "s")
    data = json.loads((synthetic_dir / "annotations" / "instances.json").read_text())
    data["images"][0]["file_name"] = "../../outside.png"
    with pytest.raises(MergeError, match="leaves"):
        check_sizes(data, "synthetic", synthetic_dir / "images")


def test_coco_export_keeps_synonyms_so_a_merge_matches_them(tiny_run, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    annotated = json.loads((export_run(tiny_run, "coco", tmp_path / "plain") / "annotations" / "instances.json")
                           .read_text())["annotations"]
    k = max(range(3), key=lambda c: sum(a["category_id"] == c + 1 for a in annotated))  # a class with instances
    spec = yaml.safe_load((run / "spec.resolved.yaml").read_text())
    name = spec["classes"][k]["name"]
    spec["classes"][k]["synonyms"] = ["sports thing"]
    (run / "spec.resolved.yaml").write_text(yaml.safe_dump(spec))
    synthetic = json.loads((export_run(run, "coco", tmp_path / "coco") / "annotations" / "instances.json").read_text())
    assert synthetic["categories"][k]["synonyms"] == [name, "sports thing"]
    real_names = ["ball", "leaf", "box"]
    real_names[k] = "sports thing"
    real = {"images": [], "annotations": [], "categories": [{"id": 7 + i, "name": n} for i, n in enumerate(real_names)]}
    merged = merge_instances(real, synthetic)
    assert [c["name"] for c in merged["categories"]] == real_names  # matched by the synonym: no category added
    matched = [a for a in synthetic["annotations"] if a["category_id"] == k + 1]
    assert matched
    assert sum(a["category_id"] == 7 + k for a in merged["annotations"]) == len(matched)
