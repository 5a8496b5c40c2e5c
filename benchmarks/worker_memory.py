"""What holding freed memory (``keep_freed_memory``) saves a generation worker.

    .venv/bin/python benchmarks/worker_memory.py [--samples 4] [--passes 3] [--rounds 2]

One shard of the example text2labels spec (``--samples`` samples, one batch) is made by a
method ``Worker`` on the embedded model, 1 compute thread, in four kinds of fresh process:
a plain process and a Ray actor, each with glibc's default malloc thresholds and with the
fixed ones ``synthscene.engine.worker_process.keep_freed_memory`` sets (what both backends
do). Each process makes the shard once untimed, then ``--passes`` times, measuring the CPU
time of its thread and its minor page faults. The four kinds alternate, in an order flipped
every round, ``--rounds`` rounds. Figures: the median per shard of each kind;
``cpu_ratio_<where>`` = default / kept (above 1: keeping memory saves that much). The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

KINDS = [("process", False), ("process", True), ("ray", False), ("ray", True)]


def make_shard_repeatedly(samples: int, passes: int, keep: bool) -> list[dict]:
    """In this process: build a worker, make the shard once untimed, then ``passes`` times."""
    from synthscene.engine.worker_process import keep_freed_memory, limit_threads
    from synthscene.methods import method_module
    from synthscene.spec import load_spec

    if keep and not keep_freed_memory():
        raise SystemExit("keep_freed_memory needs glibc")
    limit_threads(1)
    spec = load_spec("examples/shapes-text2labels.yaml").model_copy(
        update={"num_samples": samples, "shard_size": samples, "batch_size": samples})
    method = method_module(spec.method)
    tasks = method.plan(spec)
    worker = method.Worker(spec, "cpu")
    worker(tasks)
    figures = []
    for _ in range(passes):
        before, cpu = resource.getrusage(resource.RUSAGE_THREAD), time.thread_time()
        worker(tasks)
        after = resource.getrusage(resource.RUSAGE_THREAD)
        figures.append({"cpu_s": time.thread_time() - cpu, "minor_faults": after.ru_minflt - before.ru_minflt})
    return figures


def in_ray_actor(samples: int, passes: int, keep: bool) -> list[dict]:
    import ray

    actor = ray.remote(num_cpus=1)(_Maker).remote()
    try:
        return ray.get(actor.run.remote(samples, passes, keep))
    finally:
        ray.kill(actor)


class _Maker:
    def run(self, samples: int, passes: int, keep: bool) -> list[dict]:
        return make_shard_repeatedly(samples, passes, keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["process", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one fresh process of one kind: print its figures
        if args.child == "ray":
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            figures = in_ray_actor(args.samples, args.passes, args.keep)
        else:
            figures = make_shard_repeatedly(args.samples, args.passes, args.keep)
        print(json.dumps(figures))
        return

    results = {kind: [] for kind in KINDS}
    for round_ in range(args.rounds):
        for where, keep in (KINDS if round_ % 2 == 0 else KINDS[::-1]):
            command = [sys.executable, __file__, "--child", where, "--samples", str(args.samples),
                       "--passes", str(args.passes)] + (["--keep"] if keep else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{where} keep={keep} failed:\n{done.stderr[-2000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results[(where, keep)] += figures
            print(f"round {round_ + 1}, {where}, {'kept' if keep else 'default'}: "
                  + ", ".join(f"{f['cpu_s']:.2f} s / {f['minor_faults']} faults" for f in figures), flush=True)

    def median(where, keep, key):
        return statistics.median(f[key] for f in results[(where, keep)])

    summary = {}
    for where in ("process", "ray"):
        for keep in (False, True):
            name = f"{where}_{'kept' if keep else 'default'}"
            summary[f"{name}_cpu_s"] = round(median(where, keep, "cpu_s"), 3)
            summary[f"{name}_minor_faults"] = int(median(where, keep, "minor_faults"))
        summary[f"cpu_ratio_{where}"] = round(median(where, False, "cpu_s") / median(where, True, "cpu_s"), 3)
    print(json.dumps({**summary, "samples_per_shard": args.samples, "passes": args.passes, "rounds": args.rounds}))


if __name__ == "__main__":
    main()
