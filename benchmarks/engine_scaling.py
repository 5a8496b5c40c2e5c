"""How the run engine scales: the same spec on the local loop and on Ray Data actors.

    .venv/bin/python benchmarks/engine_scaling.py [--samples 96] [--shard-size 4] [--repeats 3]

The example text2labels spec on the embedded model (``--samples`` samples in shards of
``--shard-size``; 96 x 4: a run of about 2.5 minutes on the local loop here), made four
ways, each as the command a user runs (``synthscene generate --spec ... --threads 1``, a
fresh process): the local loop, Ray with 1 actor, Ray with 2 actors, and, as the
no-Ray reference for two workers, two plain processes splitting the shards
(``--shard-index I --num-shards 2``, started together); 1 compute thread each. This
machine's speed drifts 10-30 % within the hour, more than the effect measured, so every
ratio is taken inside a round, between runs made back to back (local next to Ray 1 actor,
Ray 2 actors next to the split, each pair's order flipped every other round), and the
figure is the median over ``--repeats`` rounds. The local Ray cluster
(``num_cpus=2``) is started once before timing, as a user's cluster would already be up,
and the Ray commands join it (``--ray-address``); one untimed one-shard run of the local
loop and of Ray warms the machine (file cache) and the cluster (Ray Data's helper actors)
for both. Every timing includes the imports and model loading of a fresh process (for
Ray: of each actor) and writing shards.

``ray_overhead`` = Ray 1 actor / local (goal <= 1.10); ``speedup_2_workers`` = Ray 1 actor /
Ray 2 actors (goal >= 1.7 on this 2-core machine); ``speedup_split`` = local / the two plain
processes (what two workers give here without Ray); each with its ``*_per_round`` values.
``seconds``: each configuration's fastest run. ``first_shard_seconds``:
from the command's start until its first shard is written, i.e. the fixed start-up plus one
shard, which a longer run amortises. ``identical``: every run's shards, manifest and
resolved spec are byte-identical. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from synthscene.spec import load_spec


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if relative.parts[0] in ("shards", "manifest.jsonl", "spec.resolved.yaml"):
            digest.update(str(relative).encode() + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/shapes-text2labels.yaml")
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    spec = load_spec(args.spec).model_copy(update={"num_samples": args.samples, "shard_size": args.shard_size,
                                                   "batch_size": args.shard_size})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    address = ray.get_runtime_context().gcs_address
    runs = {"local": [], "ray_1": ["--backend", "ray", "--workers", "1", "--ray-address", address],
            "ray_2": ["--backend", "ray", "--workers", "2", "--ray-address", address],
            "split_2": [["--shard-index", "0", "--num-shards", "2"], ["--shard-index", "1", "--num-shards", "2"]]}
    seconds, first_shard, digests, shards_per_worker = {}, {}, {}, {}
    ratios = {"ray_overhead": ("ray_1", "local"), "speedup_2_workers": ("ray_1", "ray_2"),
              "speedup_split": ("local", "split_2")}  # name: (numerator, denominator) runs
    per_round = {name: [] for name in ratios}
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        warm_file = Path(tmp) / "warm-up.yaml"
        warm = spec.model_copy(update={"num_samples": args.shard_size})
        warm_file.write_text(yaml.safe_dump(warm.model_dump(mode="json")))
        for name in ("local", "ray_1"):  # untimed
            subprocess.run([sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(warm_file), "--out",
                            str(Path(tmp) / f"warm-up-{name}"), "--threads", "1", *runs[name]], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for round_ in range(args.repeats):
            took_in_round = {}
            # the runs a ratio compares run back to back, each pair's order flipped every other
            # round, so neither side always follows the same neighbour
            pairs = [("local", "ray_1"), ("ray_2", "split_2")]
            order = [name for pair in pairs for name in (pair if round_ % 2 == 0 else pair[::-1])]
            for name in order:
                out = Path(tmp) / f"{name}-{round_}"
                command = [sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(spec_file), "--out",
                           str(out), "--threads", "1"]
                # a list of option lists: processes started together on the same run folder
                jobs = runs[name] if runs[name] and isinstance(runs[name][0], list) else [runs[name]]
                started, started_at = time.perf_counter(), time.time()
                logs = [Path(tmp) / f"{name}-{round_}-{k}.log" for k in range(len(jobs))]
                processes = [subprocess.Popen(command + options, stdout=subprocess.DEVNULL, stderr=log.open("w"))
                             for options, log in zip(jobs, logs)]
                for process, log in zip(processes, logs):
                    if process.wait():
                        raise SystemExit(f"{name} failed:\n{log.read_text()[-2000:]}")
                took = time.perf_counter() - started
                took_in_round[name] = took
                seconds[name] = min(took, seconds.get(name, took))
                first = min(p.stat().st_mtime for p in (out / "shards").iterdir()) - started_at
                first_shard[name] = min(first, first_shard.get(name, first))
                digests.setdefault(name, set()).add(_digest(out))
                # each shard's lock file holds the pid of the process that made it
                makers = Counter(p.read_text().strip() for p in (out / ".locks").glob("shard-*.lock"))
                shards_per_worker[name] = sorted(makers.values(), reverse=True)
                print(f"round {round_ + 1}, {name}: {took:.1f} s, shards per worker {shards_per_worker[name]}",
                      flush=True)
            for key, (numerator, denominator) in ratios.items():
                per_round[key].append(round(took_in_round[numerator] / took_in_round[denominator], 3))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in per_round.items()), flush=True)
    ray.shutdown()
    print(json.dumps({
        **{key: round(statistics.median(values), 3) for key, values in per_round.items()},
        "goal_ray_overhead": 1.10, "goal_speedup_2_workers": 1.7,
        **{f"{key}_per_round": values for key, values in per_round.items()},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "first_shard_seconds": {k: round(v, 1) for k, v in first_shard.items()},
        "identical": len(set().union(*digests.values())) == 1,
        "shards_per_worker": shards_per_worker, "samples": args.samples, "shards": -(-args.samples // args.shard_size),
    }))


if __name__ == "__main__":
    main()
