"""The plain backend: one worker in this process, shard after shard."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from synthscene.engine.worker_process import keep_freed_memory, limit_threads
from synthscene.methods import method_module
from synthscene.store import ShardBusyError, claim_shard, shard_is_done, write_shard


def make_shard(worker, spec, out: Path, number: int, tasks: list, on_batch=None) -> bool:
    """Make shard ``number`` of the run at ``out`` from its ``tasks`` and write it, under
    the shard's lock; False when another process holds it or has finished it meanwhile."""
    try:
        with claim_shard(out, number):
            if shard_is_done(out, number):
                return False
            samples = []
            for start in range(0, len(tasks), spec.batch_size):
                batch = tasks[start : start + spec.batch_size]
                samples += worker(batch)
                if on_batch is not None:
                    on_batch(len(batch))
            write_shard(out, number, samples)
            return True
    except ShardBusyError:
        return False


class LocalBackend:
    def __init__(self, execution):
        self.execution = execution
        self.worker = None
        self.restore_threads = None

    def launch(self, spec, out: Path, numbers: list[int]) -> None:
        """Nothing to start before planning: the model loads in ``start``, after the plan is checked."""

    def start(self, spec) -> None:
        keep_freed_memory()
        if self.execution.threads is not None:
            self.restore_threads = limit_threads(self.execution.threads)
        try:
            self.worker = method_module(spec.method).Worker(spec, self.execution.device)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give this process back its thread settings."""
        if self.restore_threads is not None:
            self.restore_threads()
            self.restore_threads = None
        self.worker = None

    def run(self, spec, out: Path, shards: dict[int, list], progress: bool) -> tuple[list[int], list[int]]:
        made, busy = [], []
        bar = tqdm(total=sum(len(t) for t in shards.values()), desc=spec.method, disable=not progress)
        for number, tasks in shards.items():
            if make_shard(self.worker, spec, out, number, tasks, bar.update):
                made.append(number)
            elif not shard_is_done(out, number):
                busy.append(number)
                tqdm.write(f"shard {number} is being made by another process: left to it")
        bar.close()
        return made, busy
