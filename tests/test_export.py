import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.codecs import IGNORE_INDEX
from synthscene.formats.export import export_run
from synthscene.store import from_record, open_run
from synthscene.train.data import SemanticDataset
from tests.coco_eval_helpers import self_ap


def read_records(run):
    return iter(list(open_run(run).records()))


def load_sample(shard, record):
    return from_record(record, shard)


def test_coco_export_loads_and_gt_scores_ap_1(tiny_run, tmp_path):
    out = export_run(tiny_run, "coco", tmp_path / "coco")
    path = out / "annotations" / "instances.json"
    data = json.loads(path.read_text())
    assert data["annotations"], "the tiny run should have instances"
    records = list(read_records(tiny_run))
    assert len(data["images"]) == len(records)
    for ann in data["annotations"]:
        assert ann["iscrowd"] == 0 and ann["area"] > 0
    for kind in ("bbox", "segm"):
        assert self_ap(path, kind) == {"pycocotools": pytest.approx(1.0), "faster": pytest.approx(1.0)}
    # areas equal the stored masks' pixel counts
    shard, record = records[0]
    sample = load_sample(shard, record)
    first = [a for a in data["annotations"] if a["image_id"] == record["index"] + 1]
    assert [a["area"] for a in first] == sample.instances.area.tolist()


def test_voc_export(tiny_run, tmp_path):
    out = export_run(tiny_run, "voc", tmp_path / "voc")
    stems = (out / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(stems) == 6
    assert (out / "labels.txt").read_text().splitlines() == ["0 background", "1 ball", "2 leaf", "3 box"]
    assert SemanticDataset(out).class_names == ["ball", "leaf", "box"]
    seen = set()
    for stem in stems:
        mask = Image.open(out / "SegmentationClass" / f"{stem}.png")
        assert mask.mode == "P"
        values = set(np.unique(np.array(mask)).tolist())
        assert values <= {0, 1, 2, 3, IGNORE_INDEX}
        seen |= values
    assert seen - {0}, "some class pixels expected"


def test_record_paths_may_not_leave_the_shard(tiny_run, tmp_path):
    shard, record = next(read_records(tiny_run))
    record = {**record, "image": "../../../../etc/passwd"}
    with pytest.raises(ValueError, match="leaves its shard folder"):
        load_sample(shard, record)


def test_cli_export_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--in", str(tmp_path), "--format", "coco", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a synthscene run" in result.output
    result = runner.invoke(app, ["export", "--in", str(tmp_path), "--format", "yolo9", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown format" in result.output
    assert not (tmp_path / "x").exists()


def test_dataset_card_counts_match_the_records(tiny_run):
    card = json.loads((tiny_run / "dataset_card.json").read_text())
    records = [r for _, r in read_records(tiny_run)]
    assert card["samples"] == len(records) == 6
    assert card["instances"] == sum(len(r["instances"]) for r in records)
    assert sum(card["score_histogram"]["counts"]) == card["instances"]
    assert sum(v["instances"] for v in card["per_class"].values()) == card["instances"]
    assert "| ball |" in (tiny_run / "dataset_card.md").read_text()


def test_exports_carry_the_labellers_check_scores(tiny_run, tmp_path):
    samples = list(open_run(tiny_run).samples())
    data = [s.instances.data for s in samples if len(s.instances)]
    assert data and all({"attention_agreement", "matte_confidence", "class_margin", "class_gain"} <= set(d)
                        for d in data)
    agreement = np.concatenate([d["attention_agreement"] for d in data])
    assert ((agreement >= 0) & (agreement <= 1)).all()
    assert all(np.isnan(d["class_gain"]).all() for d in data)  # the tiny run turns the not-drawn check off
    coco = json.loads((export_run(tiny_run, "coco", tmp_path / "coco") / "annotations" / "instances.json")
                      .read_text())
    attributes = [a["attributes"] for a in coco["annotations"]]
    assert [a["attention_agreement"] for a in attributes] == pytest.approx(agreement.tolist())
    assert all(a["class_gain"] is None for a in attributes)  # NaN is written as null
    result = CliRunner().invoke(app, ["export", "--in", str(tiny_run), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    rows = [row for path in sorted((tmp_path / "hf" / "data").glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    for row in rows:
        expected = [a["attributes"] for a in coco["annotations"] if a["image_id"] == row["index"] + 1]
        assert [json.loads(a) for a in row["objects"]["attributes"]] == expected
