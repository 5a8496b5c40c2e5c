"""The Ray Data backend: the pending shards as a dataset, mapped by a pool of actors.

Each actor (``ShardMaker``) builds the method's ``Worker`` once (model loaded, checked,
on its own device), reads the run's manifest, and for each shard number it is handed
makes the shard and writes it atomically itself, under the shard's lock, to the run
folder (a local path, or a shared filesystem path that every node mounts). Only shard
numbers and statuses travel through Ray, never images.

Without ``--ray-address`` a local Ray cluster is started (or the one this process
already started is reused); with one, the driver joins that cluster. Ray is an optional
extra: ``pip install 'synthscene[ray]'``.
"""

from __future__ import annotations

import logging
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


class ShardMaker:
    """A Ray actor: one method worker; maps batches of shard numbers to their status."""

    def __init__(self, spec_data: dict, out: str, device: str, threads: int | None):
        from synthscene.engine.local import limit_threads
        from synthscene.methods import method_module
        from synthscene.spec import validate_spec
        from synthscene.store import open_run

        if threads is not None:
            limit_threads(threads)  # for the actor's life
        self.spec = validate_spec(spec_data)
        self.out = Path(out)
        self.worker = method_module(self.spec.method).Worker(self.spec, device)
        tasks = open_run(self.out).tasks()
        self.shards = [[tasks[i] for i in r] for r in shard_ranges(len(tasks), self.spec.shard_size)]

    def __call__(self, batch: dict) -> dict:
        from synthscene.engine.local import make_shard
        from synthscene.store import shard_is_done

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

    def start(self, spec) -> None:
        self.ray = import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=self.execution.ray_address, include_dashboard=False, log_to_driver=False,
                          logging_level="ERROR")
        resources = self.ray.cluster_resources()
        if self.execution.gpus_per_worker and resources.get("GPU", 0) < self.execution.gpus_per_worker:
            raise ValueError(f"--gpus-per-worker {self.execution.gpus_per_worker}: the Ray cluster has "
                             f"{resources.get('GPU', 0)} GPUs")

    def close(self) -> None:
        """The Ray cluster stays up (a local one ends with this process)."""

    def run(self, spec, out: Path, shards: dict[int, list], progress: bool) -> tuple[list[int], list[int]]:
        if not shards:
            return [], []
        ray, execution = self.ray, self.execution
        context = ray.data.DataContext.get_current()
        # our own bar shows progress by shard; Ray's bars and periodic checks cost the driver CPU
        # that the actors need on a small machine
        context.enable_progress_bars = False
        context.enable_operator_progress_bars = False
        context.memory_usage_poll_interval_s = 30
        numbers = sorted(shards)
        dataset = ray.data.from_items([{"shard": n} for n in numbers], override_num_blocks=len(numbers))
        statuses = dataset.map_batches(
            ShardMaker,
            fn_constructor_kwargs={"spec_data": spec.model_dump(mode="json"), "out": str(Path(out).resolve()),
                                   "device": execution.device, "threads": execution.threads},
            batch_size=1,
            # one shard in flight per actor: a free actor takes the next shard, so no actor queues
            # shards while another idles (shards are long, the hand-off cost is nothing beside them)
            compute=ray.data.ActorPoolStrategy(size=min(execution.workers, len(numbers)),
                                               max_tasks_in_flight_per_actor=1),
            num_cpus=execution.threads or 1,
            num_gpus=execution.gpus_per_worker or None,
        )
        made, busy = [], []
        bar = tqdm(total=len(numbers), desc=f"{spec.method} shards (ray)", disable=not progress)
        for row in statuses.iter_rows():
            if row["status"] == "made":
                made.append(int(row["shard"]))
            elif row["status"] == "busy":
                busy.append(int(row["shard"]))
                tqdm.write(f"shard {row['shard']} is being made by another process: left to it")
            bar.update(1)
        bar.close()
        return sorted(made), sorted(busy)
