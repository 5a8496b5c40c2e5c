"""The run loop every method shares: plan -> hand-off files -> atomic shards -> card.

A method supplies the planned tasks and a function that turns one batch of tasks into
labelled ``Sample``s; this module writes the resolved spec and the manifest before any
sample, one shard at a time (``--resume`` skips finished ones), provenance and the
dataset card.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from synthscene.io import write_json, write_jsonl
from synthscene.models.load import model_fingerprint
from synthscene.plan import SampleTask
from synthscene.provenance import run_record
from synthscene.records import Sample
from synthscene.report.card import write_dataset_card
from synthscene.spec import DatasetSpec, dump_spec
from synthscene.store import shard_is_done, write_shard


def run_shards(spec: DatasetSpec, out: Path, tasks: list[SampleTask], pipe,
               label_batch: Callable[[list[SampleTask]], list[Sample]], resume: bool, progress: bool,
               description: str) -> Path:
    """Write ``tasks`` as labelled shards under ``out`` (see ``synthscene.store``)."""
    out = Path(out)
    prepare_run_folder(out, spec, tasks, resume)
    write_json(out / "run.json", run_record(spec.model_dump(mode="json"), model_fingerprint(pipe)), indent=2)
    shards = [tasks[i : i + spec.shard_size] for i in range(0, len(tasks), spec.shard_size)]
    bar = tqdm(total=len(tasks), desc=description, disable=not progress)
    for number, shard_tasks in enumerate(shards):
        if shard_is_done(out, number):
            bar.update(len(shard_tasks))
            continue
        samples = []
        for start in range(0, len(shard_tasks), spec.batch_size):
            samples += label_batch(shard_tasks[start : start + spec.batch_size])
            bar.update(min(spec.batch_size, len(shard_tasks) - start))
        write_shard(out, number, samples)
    bar.close()
    write_dataset_card(out)
    return out


def prepare_run_folder(out: Path, spec: DatasetSpec, tasks: list[SampleTask], resume: bool) -> None:
    """Resolved spec and manifest of a new run; on resume, check they are unchanged."""
    manifest = out / "manifest.jsonl"
    resolved = dump_spec(spec)
    if resume:
        if not manifest.is_file():
            raise FileNotFoundError(f"cannot resume: {manifest} does not exist")
        if (out / "spec.resolved.yaml").read_text() != resolved:
            raise ValueError(f"cannot resume: the spec differs from the one {out} was started with")
        return
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} already exists and is not empty (use --resume to continue it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot write to {out}: {err.strerror}") from err
    (out / "spec.resolved.yaml").write_text(resolved)
    write_jsonl(manifest, [t.to_json() for t in tasks])
