"""The Ray Data backend: the pending shards as a dataset, mapped by a pool of actors.

Each actor (``ShardMaker``) builds the method's ``Worker`` once (model loaded, checked,
on its own device), reads the run's manifest, and for each shard number it is handed
makes the shard and writes it atomically itself, under the shard's lock, to the run
folder (a local path, or a shared filesystem path that every node mounts). Only shard
numbers and statuses travel through Ray, never images.

The actors are started before the driver plans (``RayBackend.launch``), so a fresh
actor's imports and model loading overlap the planning instead of following it; they
wait at a ``Gate`` until the manifest is written (or the run is called off) before
reading it.

Without ``--ray-address`` a local Ray cluster is started (or the one this process
already started is reused); with one, the driver joins that cluster. Ray is an optional
extra: ``pip install 'synthscene[ray]'``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthscene.plan import shard_ranges


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError("--backend ray needs Ray Data, which is not installed: pip install 'synthscene[ray]'") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own bar reports progress
    return ray


class Gate:
    """A Ray actor the shard makers wait at until the driver has written the manifest
    (``open(True)``) or called the run off (``open(False)``: planning failed)."""

    def __init__(self):
        self._opened = asyncio.Event()
        self._go = False

    async def open(self, go: bool) -> None:
        if not self._opened.is_set():  # the first word stands
            self._go = go
            self._opened.set()

    async def wait(self) -> bool:
        await self._opened.wait()
        return self._go


class ShardMaker:
    """A Ray actor: one method worker; maps batches of shard numbers to their status."""

    def __init__(self, spec_data: dict, out: str, device: str, threads: int | None, gate):
        from synthscene.engine.worker_process import keep_freed_memory, limit_threads
        from synthscene.methods import method_module
        from synthscene.spec import validate_spec

        keep_freed_memory()
        if threads is not None:
            limit_threads(threads)  # for the actor's life
        self.spec = validate_spec(spec_data)
        self.out = Path(out)
        self.worker = method_module(self.spec.method).Worker(self.spec, device)
        self.gate = gate
        self.shards = None  # read from the manifest once the gate opens

    def __call__(self, batch: dict) -> dict:
        import ray

        from synthscene.engine.local import make_shard
        from synthscene.store import open_run, shard_is_done

        if self.shards is None:
            if not ray.get(self.gate.wait.remote()):
                return {"shard": batch["shard"], "status": np.array(["cancelled"] * len(batch["shard"]))}
            tasks = open_run(self.out).tasks()
            self.shards = [[tasks[i] for i in r] for r in shard_ranges(len(tasks), self.spec.shard_size)]
        statuses = []
        for number in batch["shard"].tolist():
            if make_shard(self.worker, self.spec, self.out, number, self.shards[number]):
                statuses.append("made")
            else:
                statuses.append("done" if shard_is_done(self.out, number) else "busy")
        return {"shard": batch["shard"], "status": np.array(statuses)}


class RayBackend:
    def __init__(self, execution):
        self.execution = execution
        self.ray = None
        self.gate = None
        self.rows = None  # statuses from the consuming thread; None ends them, an exception is raised
        self.launched: list[int] = []

    def launch(self, spec, out: Path, numbers: list[int]) -> None:
        """Join (or start) the cluster and start actors for shards ``numbers`` of the run at
        ``out``: they load the model while the driver plans, then wait at the gate."""
        self.ray = import_ray()
        ray, execution = self.ray, self.execution
        if not ray.is_initialized():
            ray.init(address=execution.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        resources = ray.cluster_resources()
        if execution.gpus_per_worker and resources.get("GPU", 0) < execution.gpus_per_worker:
            raise ValueError(f"--gpus-per-worker {execution.gpus_per_worker}: the Ray cluster has "
                             f"{resources.get('GPU', 0)} GPUs")
        if not numbers:
            return
        context = ray.data.DataContext.get_current()
        # our own bar shows progress by shard; Ray's bars and periodic checks cost the driver CPU
        # that the actors need on a small machine
        context.enable_progress_bars = False
        context.enable_operator_progress_bars = False
        context.memory_usage_poll_interval_s = 30
        self.gate = ray.remote(num_cpus=0)(Gate).remote()
        dataset = ray.data.from_items([{"shard": n} for n in numbers], override_num_blocks=len(numbers))
        statuses = dataset.map_batches(
            ShardMaker,
            fn_constructor_kwargs={"spec_data": spec.model_dump(mode="json"), "out": str(Path(out).resolve()),
                                   "device": execution.device, "threads": execution.threads, "gate": self.gate},
            batch_size=1,
            # one shard in flight per actor: a free actor takes the next shard, so no actor queues
            # shards while another idles (shards are long, the hand-off cost is nothing beside them).
            # enable_true_multi_threading with one call at a time runs our call on the actor's main
            # thread, as the local loop does, instead of on a helper thread Ray Data adds to overlap
            # batching (nothing to overlap here: a batch is one shard number)
            compute=ray.data.ActorPoolStrategy(size=min(execution.workers, len(numbers)),
                                               max_tasks_in_flight_per_actor=1, enable_true_multi_threading=True),
            num_cpus=execution.threads or 1,
            num_gpus=execution.gpus_per_worker or None,
        )
        # iterating is what starts the actors, so it begins now, in a thread, while the driver plans
        self.rows = queue.Queue()
        self.launched = numbers
        threading.Thread(target=self._consume, args=(statuses,), daemon=True, name="synthscene-ray-rows").start()

    def _consume(self, statuses) -> None:
        try:
            for row in statuses.iter_rows():
                self.rows.put(row)
            self.rows.put(None)
        except BaseException as error:  # handed to the driver's thread, which raises it
            self.rows.put(error)

    def start(self, spec) -> None:
        """Nothing left to do: ``launch`` started the actors."""

    def close(self) -> None:
        """Calls the actors off if the run never reached them (planning failed); the cluster
        stays up (a local one ends with this process)."""
        if self.gate is not None:
            self.gate.open.remote(False)  # a no-op once opened
            self.gate = None

    def run(self, spec, out: Path, shards: dict[int, list], progress: bool) -> tuple[list[int], list[int]]:
        """Open the gate and collect the statuses. Shards launched but finished meanwhile by
        another process come back as "done"; none outside ``launched`` can be pending."""
        if not shards:
            return [], []
        self.ray.get(self.gate.open.remote(True))
        made, busy = [], []
        bar = tqdm(total=len(self.launched), desc=f"{spec.method} shards (ray)", disable=not progress)
        while (row := self.rows.get()) is not None:
            if isinstance(row, BaseException):
                raise row
            if row["status"] == "made":
                made.append(int(row["shard"]))
            elif row["status"] == "busy":
                busy.append(int(row["shard"]))
                tqdm.write(f"shard {row['shard']} is being made by another process: left to it")
            bar.update(1)
        bar.close()
        return sorted(made), sorted(busy)
