"""The run engine: manifest read back, resume, shard splits, per-shard locks, Ray Data."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from synthscene.engine import Execution, run_spec
from synthscene.spec import validate_spec
from synthscene.store import claim_shard, open_run
from tests.helpers import make_run, shard_digest


def _spec(model_dir, **overrides):
    data = {"name": "engine", "model": str(model_dir), "num_samples": 6, "seed": 2, "shard_size": 2, "batch_size": 2,
            "classes": [{"name": "ball"}, {"name": "leaf"}, {"name": "box"}],
            "sampler": {"steps": 2, "guidance": 3.0},
            "text2labels": {"cross_resolutions": [8], "self_resolution": 8, "min_instance_area": 1}}
    return validate_spec({**data, **overrides})


def _run_files(root):
    """Everything a finished run holds that must not depend on how it was made."""
    files = {"shards": shard_digest(root), "manifest": (root / "manifest.jsonl").read_text(),
             "spec": (root / "spec.resolved.yaml").read_text()}
    card = json.loads((root / "dataset_card.json").read_text())
    files["card"] = {k: v for k, v in card.items() if k != "versions"}
    return files


@pytest.fixture(scope="module")
def straight(tiny_pipeline_dir, tmp_path_factory):
    """The reference: one local run, one torch thread."""
    return make_run(_spec(tiny_pipeline_dir), tmp_path_factory.mktemp("straight") / "run", threads=1)


def test_the_manifest_is_read_back_not_replanned(tiny_pipeline_dir, tmp_path, straight):
    out = tmp_path / "run"
    make_run(_spec(tiny_pipeline_dir, num_samples=2, shard_size=1), out, threads=1)
    # a run whose manifest says other prompts makes those prompts: the manifest is the plan
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rows[1]["prompt"] = "a photo of a box"
    rows[1]["class_ids"], rows[1]["words"] = [2], ["box"]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for path in (out / "shards" / "shard-00001").rglob("*"):
        path.unlink() if path.is_file() else None
    (out / "shards" / "shard-00001" / "images").rmdir()
    (out / "shards" / "shard-00001" / "semantic").rmdir()
    (out / "shards" / "shard-00001").rmdir()
    make_run(_spec(tiny_pipeline_dir, num_samples=2, shard_size=1), out, resume=True, threads=1)
    captions = [s.caption for s in open_run(out).samples()]
    assert captions[1] == "a photo of a box" and captions[0] == rows[0]["prompt"]


def test_split_runs_join_into_the_same_bytes(tiny_pipeline_dir, tmp_path, straight):
    out = tmp_path / "split"
    spec = _spec(tiny_pipeline_dir)
    first = run_spec(spec, out, execution=Execution(shard_index=0, num_shards=2, threads=1), progress=False)
    assert first.made == [0, 2] and not first.finished and not (out / "dataset_card.json").exists()
    second = run_spec(spec, out, execution=Execution(shard_index=1, num_shards=2, threads=1), progress=False)
    assert second.made == [1] and second.finished
    assert _run_files(out) == _run_files(straight)


def test_a_shard_held_by_another_process_is_left_to_it(tiny_pipeline_dir, tmp_path, straight):
    out = tmp_path / "run"
    spec = _spec(tiny_pipeline_dir)
    make_run(spec, out, num_shards=3, shard_index=0, threads=1)  # plans, makes shard 0
    with claim_shard(out, 1):  # another process is making shard 1
        summary = run_spec(spec, out, resume=True, execution=Execution(threads=1), progress=False)
        assert summary.made == [2] and summary.busy == [1] and not summary.finished
        assert not (out / "shards" / "shard-00001").exists() and not (out / "dataset_card.json").exists()
    summary = run_spec(spec, out, resume=True, execution=Execution(threads=1), progress=False)
    assert summary.made == [1] and summary.finished
    assert _run_files(out) == _run_files(straight)


def test_bad_executions_are_refused_before_anything_is_written(tiny_pipeline_dir, tmp_path):
    spec = _spec(tiny_pipeline_dir)
    for execution, message in ((Execution(backend="spark"), "unknown backend"),
                               (Execution(shard_index=2, num_shards=2), "shard-index"),
                               (Execution(workers=2), "need --backend ray"),
                               (Execution(backend="ray", device="cuda"), "gpus-per-worker")):
        with pytest.raises(ValueError, match=message):
            run_spec(spec, tmp_path / "run", execution=execution, progress=False)
        assert not (tmp_path / "run").exists()
    make_run(spec, tmp_path / "run", threads=1)
    with pytest.raises(FileExistsError, match="--resume"):
        make_run(spec, tmp_path / "run")
    with pytest.raises(ValueError, match="spec differs"):
        make_run(_spec(tiny_pipeline_dir, seed=9), tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        make_run(spec, tmp_path / "never", resume=True)


def test_resume_of_a_run_killed_before_its_spec_was_saved_starts_it_afresh(tiny_pipeline_dir, tmp_path, straight):
    out = tmp_path / "run"
    (out / ".locks").mkdir(parents=True)  # what a kill during planning leaves
    (out / "manifest.jsonl").write_text('{"index": 0, "se')
    make_run(_spec(tiny_pipeline_dir), out, resume=True, threads=1)
    assert shard_digest(out) == shard_digest(straight)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no spec.resolved.yaml.*notes.txt"):
        make_run(_spec(tiny_pipeline_dir), stranger, resume=True)
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]


def test_missing_ray_gives_one_clear_error(tiny_pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ValueError, match=r"synthscene\[ray\]"):
        run_spec(_spec(tiny_pipeline_dir), tmp_path / "run", execution=Execution(backend="ray"), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_gives_the_same_bytes_as_the_local_loop(ray_cluster, tiny_pipeline_dir, tmp_path, straight, workers):
    out = make_run(_spec(tiny_pipeline_dir), tmp_path / "ray", backend="ray", workers=workers, threads=1)
    assert _run_files(out) == _run_files(straight)


@pytest.mark.slow
def test_ray_actors_started_before_a_failing_plan_are_called_off(ray_cluster, tiny_pipeline_dir, tmp_path,
                                                                 straight):
    # the actors start loading the model before the driver plans; a plan that fails its check
    # (a class word beyond the 77-token window) calls them off and leaves nothing behind
    long_prompt = "a photo of " + "very " * 80 + "{name}"
    bad = _spec(tiny_pipeline_dir, classes=[{"name": "ball", "prompts": [long_prompt]}], objects_per_prompt=[1, 1])
    with pytest.raises(ValueError, match="longer than"):
        make_run(bad, tmp_path / "bad", backend="ray", workers=2, threads=1)
    assert not (tmp_path / "bad").exists()
    # the called-off actors gave their CPUs back: the next run on the cluster finishes
    out = make_run(_spec(tiny_pipeline_dir), tmp_path / "good", backend="ray", workers=2, threads=1)
    assert _run_files(out) == _run_files(straight)


@pytest.mark.slow
def test_a_killed_ray_actor_leaves_no_partial_shard_and_resume_finishes(ray_cluster, tiny_pipeline_dir, tmp_path):
    spec = _spec(tiny_pipeline_dir, num_samples=8, shard_size=1, batch_size=1, sampler={"steps": 8, "guidance": 3.0})
    straight = make_run(spec, tmp_path / "straight", threads=1)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(spec_file), "--out", str(out),
               "--threads", "1"]
    driver = subprocess.Popen(command + ["--backend", "ray", "--ray-address", ray_cluster], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # the actor writes its pid into the lock of the shard it is making: kill it mid-shard
    lock = out / ".locks" / "shard-00002.lock"
    deadline = time.monotonic() + 180
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        assert driver.poll() is None, "the Ray run ended before shard 2 started"
        time.sleep(0.05)
    actor = int(lock.read_text())
    assert actor != driver.pid  # the shard is made in the actor process, not the driver
    os.kill(actor, signal.SIGKILL)
    driver.wait(timeout=300)  # Ray restarts the actor and retries, or the driver fails: either may happen
    for shard in (out / "shards").iterdir():
        if not shard.name.endswith(".tmp"):  # a finished name always holds a whole shard
            assert (shard / "records.jsonl").is_file()
            assert len((shard / "records.jsonl").read_text().splitlines()) == 1
    # resume on Ray too (tests/test_text2labels.py kills and resumes the local loop)
    subprocess.run(command + ["--resume", "--backend", "ray", "--ray-address", ray_cluster], check=True,
                   capture_output=True)
    assert _run_files(out) == _run_files(straight)


@pytest.mark.slow
def test_two_processes_resuming_one_run_at_once_share_it(tiny_pipeline_dir, tmp_path):
    spec = _spec(tiny_pipeline_dir, num_samples=8, shard_size=1, batch_size=1, sampler={"steps": 6, "guidance": 3.0})
    straight = make_run(spec, tmp_path / "straight", threads=1)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    out = tmp_path / "shared"
    make_run(spec, out, num_shards=8, shard_index=0, threads=1)  # a started run: shard 0 made, 7 pending
    command = [sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(spec_file), "--out", str(out),
               "--resume", "--threads", "1"]
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert _run_files(out) == _run_files(straight)
