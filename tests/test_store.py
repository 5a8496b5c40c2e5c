"""The record schema and opened runs: one to_record / from_record, untrusted files refused."""

import json

import numpy as np
import pytest

from synthscene.records import Instances, Sample
from synthscene.store import RunError, from_record, open_run, to_record, write_shard


def _sample(index=3, masks=True):
    image = np.random.default_rng(index).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    if masks:
        m = np.zeros((2, 6, 8), bool)
        m[0, 1:3, 1:4] = True
        m[1, 4:6, 5:8] = True
        instances = Instances.from_masks(m, [0, 2], [0.25, 0.75], data={"margin": np.array([0.5, 1.5])})
        semantic = np.zeros((6, 8), np.uint8)
        semantic[m[0]], semantic[m[1]], semantic[0, 0] = 1, 3, 255
    else:
        instances, semantic = Instances.from_boxes([[0, 0, 3, 2], [2, 2, 8, 6]], [1, 1]), None
    return Sample(index, 42, "a photo of a <ball>", image, instances, semantic, (0, 2), {"small": 1}, {"note": [1, 2]})


@pytest.mark.parametrize("masks", [True, False])
def test_a_shard_round_trips_every_field(tmp_path, masks):
    sample = _sample(masks=masks)
    folder = write_shard(tmp_path, 0, [sample])
    (record,) = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert record == to_record(sample, "images/0000003.png", "semantic/0000003.png" if masks else None)
    back = from_record(record, folder)
    assert (back.index, back.seed, back.caption, back.class_ids, back.dropped, back.extra) == \
        (3, 42, "a photo of a <ball>", (0, 2), {"small": 1}, {"note": [1, 2]})
    assert np.array_equal(back.image, sample.image)
    assert (back.semantic is None) == (not masks)
    if masks:
        assert np.array_equal(back.semantic, sample.semantic)
        assert np.array_equal(back.instances.masks, sample.instances.masks)
        assert back.instances.data["margin"].tolist() == [0.5, 1.5]
    else:
        assert back.instances.masks is None and back.instances.area.tolist() == [6, 24]
    assert np.array_equal(back.instances.xyxy, sample.instances.xyxy)
    assert back.instances.class_id.tolist() == sample.instances.class_id.tolist()


def test_part_maps_round_trip_and_only_part_labelled_samples_carry_them(tmp_path):
    from dataclasses import replace

    plain = _sample(index=3)
    parts = np.zeros((6, 8), np.uint8)
    parts[1:3, 1:4] = [[1, 2, 2], [1, 1, 2]]
    labelled = replace(_sample(index=4), parts=parts)
    folder = write_shard(tmp_path, 0, [plain, labelled])
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert "parts" not in records[0] and records[1]["parts"] == "parts/0000004.png"
    assert from_record(records[0], folder).parts is None
    assert np.array_equal(from_record(records[1], folder).parts, parts)
    records[1]["parts"] = "../../elsewhere.png"
    with pytest.raises(ValueError, match="leaves its shard folder"):
        from_record(records[1], folder)


def test_records_written_before_the_schema_still_open(tmp_path):
    folder = write_shard(tmp_path, 0, [_sample()])
    record = json.loads((folder / "records.jsonl").read_text())
    old = {k: v for k, v in record.items() if k not in ("caption", "dropped", "extra", "has_masks")}
    old.update(prompt="old prompt", dropped_small=2, layout={"cells": []}, region_prompts=["a"])
    back = from_record(old, folder)
    assert back.caption == "old prompt" and back.dropped == {"small": 2}
    assert back.extra == {"layout": {"cells": []}, "region_prompts": ["a"]}


def test_an_opened_run_gives_spec_tasks_and_samples(tiny_run):
    run = open_run(tiny_run)
    tasks = run.tasks()
    samples = list(run.samples())
    assert run.spec.method == "text2labels" and run.class_names == ["ball", "leaf", "box"]
    assert [t.index for t in tasks] == [s.index for s in samples] == list(range(6))
    assert all(s.caption == t.prompt and s.seed == t.seed for s, t in zip(samples, tasks))
    assert run.provenance["model"]["unet_sha256_prefix"]


def test_damaged_runs_are_named_in_one_error(tiny_run, tmp_path):
    with pytest.raises(RunError, match="not a synthscene run"):
        open_run(tmp_path)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    records = sorted(copy.glob("shards/*/records.jsonl"))[0]
    records.write_text(records.read_text()[:-40])  # truncated mid-line
    with pytest.raises(RunError, match=f"{records}.*not valid JSON"):
        list(open_run(copy).records())
    (copy / "manifest.jsonl").write_text('{"index": 0,\n')
    with pytest.raises(RunError, match="manifest.jsonl line 1"):
        open_run(copy).tasks()


def test_runs_resolved_before_the_spec_union_still_open(tiny_run, tmp_path):
    import shutil

    import yaml

    copy = tmp_path / "old"
    shutil.copytree(tiny_run, copy)
    data = yaml.safe_load((copy / "spec.resolved.yaml").read_text())
    data["mosaic"] = {"grid": [2, 2]}  # what every resolved spec carried before
    (copy / "spec.resolved.yaml").write_text(yaml.safe_dump(data))
    assert open_run(copy).spec.method == "text2labels" and len(list(open_run(copy).samples())) == 6


class _SlowWorker:
    """Makes one sample per task, slowly enough that writers overlap."""

    def __call__(self, tasks):
        import time

        time.sleep(0.01)
        return [_sample(index=t) for t in tasks]


def _make_every_shard(args):
    from types import SimpleNamespace

    from synthscene.engine.local import make_shard

    root, order = args
    spec = SimpleNamespace(batch_size=1)
    return [number for number in order if make_shard(_SlowWorker(), spec, root, number, [number])]


def test_150_simultaneous_writers_split_the_shards_and_lose_none(tmp_path):
    import multiprocessing

    from synthscene.store import LOCKS, shard_is_done

    (tmp_path / LOCKS).mkdir()
    shards, writers = 25, 6  # 150 attempts to make a shard, many at the same moment
    orders = [[int(n) for n in np.random.default_rng(w).permutation(shards)] for w in range(writers)]
    with multiprocessing.get_context("spawn").Pool(writers) as pool:
        made = pool.map(_make_every_shard, [(tmp_path, order) for order in orders])
    assert sorted(n for mine in made for n in mine) == list(range(shards))  # each made once, by one writer
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [f"shard-{n:05d}" for n in range(shards)]
    for number in range(shards):
        assert shard_is_done(tmp_path, number)
        (record,) = [json.loads(line) for line in
                     (tmp_path / "shards" / f"shard-{number:05d}" / "records.jsonl").read_text().splitlines()]
        assert record["index"] == number
        sample = from_record(record, tmp_path / "shards" / f"shard-{number:05d}")
        assert np.array_equal(sample.image, _sample(index=number).image)
