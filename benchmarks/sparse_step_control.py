"""Is a data-sparse gain data or steps? Real only, trained as long as the mixed cells.

    .venv/bin/python benchmarks/sparse_step_control.py --experiment runs/exp-sparse
        [--task detection] [--fractions 0.1,1] [--against real+filtered]

Under the sparse profile's step rule a mixed cell trains on more images than its real-only
cell, so it also trains for more steps (where the rule's floor does not bind). This retrains
each real-only cell of a finished ``synthscene experiment --profile sparse`` run with the step
and warm-up count of the ``--against`` cell at the same fraction and seed (everything else
from the real-only cell's ``config.json``), scores it on the experiment's world, and reports,
per fraction: ``real`` (as the experiment trained it), ``real_longer`` (this run), the mixed
cell, and the paired differences mixed - real and mixed - real_longer (mean and std over
seeds). Only the second difference is what the synthetic data adds at equal steps.
Models are written to ``EXPERIMENT/step-control``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthscene.experiment import percent, score_on_world
from synthscene.train.downstream import DownstreamConfig, train_downstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, required=True)
    parser.add_argument("--task", default="detection", choices=("detection", "semantic"))
    parser.add_argument("--fractions", default="0.1,1")
    parser.add_argument("--against", default="real+filtered")
    args = parser.parse_args()
    models, world = args.experiment / "models", args.experiment / "data" / "world"
    metric_of = {"detection": ("box_ap", "mask_ap"), "semantic": ("miou",)}[args.task]
    scored = {(r["metric"], r["real_fraction"], r["setting"]): r
              for r in json.loads((args.experiment / "results.json").read_text())}
    seeds = json.loads((args.experiment / "run.json").read_text())["config"]["seeds"]
    report = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        longer = {metric: [] for metric in metric_of}
        for seed in tqdm(seeds, desc=f"real {percent(fraction)}"):
            real = json.loads((models / f"{args.task}-{percent(fraction)}-real-seed{seed}" / "config.json").read_text())
            mixed = json.loads(
                (models / f"{args.task}-{percent(fraction)}-{args.against}-seed{seed}" / "config.json").read_text())
            config = DownstreamConfig(**{**real, "steps": mixed["steps"], "warmup_steps": mixed["warmup_steps"]})
            run = train_downstream(config, args.experiment / "step-control" / f"{args.task}-{percent(fraction)}-seed{seed}",
                                   progress=False)
            for metric, value in score_on_world(args.task, run, world).items():
                if metric in longer:
                    longer[metric].append(value)
        for metric, values in longer.items():
            real = scored[metric, fraction, "real"]["seeds"]
            mixed = scored[metric, fraction, args.against]["seeds"]
            report[f"{metric}@{fraction:g}"] = {
                "steps_real": real_steps(models, args.task, fraction, seeds, "real"),
                "steps_longer": real_steps(models, args.task, fraction, seeds, args.against),
                "real": summary(real), "real_longer": summary(values), args.against: summary(mixed),
                "mixed_minus_real": summary(np.subtract(mixed, real)),
                "mixed_minus_real_longer": summary(np.subtract(mixed, values)),
            }
            print(f"{metric} at {fraction:g} real: real {100 * np.mean(real):.1f}, real trained longer "
                  f"{100 * np.mean(values):.1f}, {args.against} {100 * np.mean(mixed):.1f}", flush=True)
    print(json.dumps({"task": args.task, "against": args.against, "seeds": seeds, **report}))


def real_steps(models: Path, task: str, fraction: float, seeds, setting: str) -> list[int]:
    return [json.loads((models / f"{task}-{percent(fraction)}-{setting}-seed{s}" / "config.json").read_text())["steps"]
            for s in seeds]


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": values}


if __name__ == "__main__":
    main()
