"""One run loop for every method, on one machine or many.

1. plan: the method's ``plan(spec)`` gives every task (seeds, prompts, layouts) and
   ``check`` refuses what the model cannot make, before anything is written;
2. the resolved spec, the manifest and ``run.json`` are written; the manifest is then
   read back, and it alone says what each shard holds (``--resume`` re-plans nothing);
3. the pending shards (optionally only every K-th, for array jobs) go to a backend: a
   plain loop in this process, or Ray Data actors (``synthscene.engine.ray``); each shard
   is written atomically by whoever made it, under a per-shard lock;
4. once every shard exists, the dataset card is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from synthscene.io import make_dir, refuse_nonempty_output, write_json, write_jsonl, write_text
from synthscene.methods import method_module
from synthscene.models.info import model_fingerprint
from synthscene.plan import shard_ranges
from synthscene.provenance import run_record
from synthscene.spec import dump_spec
from synthscene.store import LOCKS, open_run, run_lock, shard_is_done

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Execution:
    """Where and how a run's shards are made (not part of the spec: the same spec gives the
    same bytes on every backend)."""

    backend: str = "local"
    device: str = "cpu"
    shard_index: int = 0  # with num_shards K: make only shards n with n % K == shard_index
    num_shards: int = 1
    workers: int = 1  # ray: actors
    gpus_per_worker: float = 0.0  # ray
    ray_address: str | None = None  # ray: an existing cluster; None starts a local one
    threads: int | None = None  # compute threads per worker: torch, OpenCV, BLAS (None: their defaults)

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must satisfy 0 <= index < --num-shards, got {self.shard_index} "
                             f"of {self.num_shards}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.backend == "ray" and self.device != "cpu" and not self.gpus_per_worker:
            raise ValueError(f"--device {self.device} on Ray needs --gpus-per-worker (Ray gives an actor only the "
                             "GPUs it asks for)")
        if self.backend == "local" and (self.workers != 1 or self.gpus_per_worker or self.ray_address):
            raise ValueError("--workers, --gpus-per-worker and --ray-address need --backend ray")


@dataclass(frozen=True)
class RunSummary:
    out: Path
    shards: int  # in the whole run
    made: list[int]  # by this call
    busy: list[int]  # held by another process, left to it
    finished: bool  # every shard exists (the card is written)


def run_spec(spec, out: str | Path, resume: bool = False, execution: Execution = Execution(),
             progress: bool = True) -> RunSummary:
    """Make (or continue) the run of ``spec`` in ``out``; see the module docstring."""
    execution.check()
    out = Path(out)
    method = method_module(spec.method)
    backend = _backend(execution)
    # a split run's jobs start together: the first plans, the others join its manifest
    join = resume or execution.num_shards > 1
    if not join:
        refuse_nonempty_output(out, "use --resume to continue it")
    elif resume:
        _check_resumable(out)
    resolved = dump_spec(spec)
    shards = len(shard_ranges(spec.num_samples, spec.shard_size))
    try:
        # Ray's actors start loading the model now and wait for the manifest; the local loop does nothing yet
        backend.launch(spec, out, _pending(out, shards, execution))
        tasks = None
        if not (out / "spec.resolved.yaml").is_file():
            tasks = method.plan(spec)
            method.check(spec, tasks)
        backend.start(spec)  # loads the model here, so a model that cannot run fails before anything is written
        made, busy = _run_shards(spec, out, join, resolved, tasks, execution, backend, progress)
    finally:
        backend.close()
    finished = all(shard_is_done(out, n) for n in range(shards))
    if finished:
        from synthscene.report.card import write_dataset_card

        write_dataset_card(out)
    return RunSummary(out, shards, made, busy, finished)


def _run_shards(spec, out: Path, join: bool, resolved: str, tasks, execution: Execution, backend,
                progress: bool) -> tuple[list[int], list[int]]:
    """Write (or check) the spec and manifest, read the manifest back, run this call's pending shards."""
    make_dir(out / LOCKS)
    with run_lock(out):
        spec_file = out / "spec.resolved.yaml"
        if spec_file.is_file():
            if not join:
                raise FileExistsError(f"output folder {out} already holds a run (use --resume to continue it)")
            # compared as data: a release that orders the spec's fields differently still resumes
            if yaml.safe_load(spec_file.read_text()) != yaml.safe_load(resolved):
                raise ValueError(f"cannot resume: the spec differs from the one {out} was started with")
        else:
            write_jsonl(out / "manifest.jsonl", [t.to_json() for t in tasks])
            write_json(out / "run.json", run_record(spec.model_dump(mode="json"), model_fingerprint(spec.model),
                                                    execution=_execution_record(execution)), indent=2)
            write_text(spec_file, resolved)  # last: a run folder with a spec has its manifest

    tasks = open_run(out).tasks()  # the manifest, read back: the one source of what each shard holds
    shards = [[tasks[i] for i in r] for r in shard_ranges(len(tasks), spec.shard_size)]
    return backend.run(spec, out, {n: shards[n] for n in _pending(out, len(shards), execution)}, progress)


def _pending(out: Path, shards: int, execution: Execution) -> list[int]:
    """This call's shards (every K-th for a split run) that are not written yet."""
    mine = range(execution.shard_index, shards, execution.num_shards)
    return [n for n in mine if not shard_is_done(out, n)]


def _check_resumable(out: Path) -> None:
    """A run killed before its spec was saved (the last of its plan files) has nothing to
    keep: resuming it starts it afresh. Anything else in the folder is not ours to replace."""
    if not out.is_dir():
        raise FileNotFoundError(f"cannot resume: {out} does not exist (start the run without --resume)")
    if (out / "spec.resolved.yaml").is_file():
        return
    ours = {LOCKS, "manifest.jsonl", "run.json"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))
    if foreign:
        raise FileExistsError(f"cannot resume: {out} holds no synthscene run (no spec.resolved.yaml) but other "
                              f"files, e.g. {foreign[0]}")


def _execution_record(execution: Execution) -> dict:
    return {k: v for k, v in asdict(execution).items() if k != "ray_address"}


def _backend(execution: Execution):
    if execution.backend == "ray":
        from synthscene.engine.ray import RayBackend

        return RayBackend(execution)
    from synthscene.engine.local import LocalBackend

    return LocalBackend(execution)
