"""Is a data-sparse gain data or steps? Real only and a mixed cell, trained equally long.

    .venv/bin/python benchmarks/sparse_step_control.py --experiment runs/exp-sparse
        [--task detection] [--fractions 0.1,1] [--against real+filtered] [--steps N] [--jobs 2] [--seeds 0,1]

Without ``--steps``: retrains each real-only cell of a finished ``synthscene experiment
--profile sparse`` run with the step and warm-up count of the ``--against`` cell at the same
fraction and seed (everything else from the real-only cell's ``config.json``). Under the
sparse profile's first step rule (before session 27) a mixed cell trained on more images than
its real-only cell and so for more steps; under today's rule every cell of a fraction trains
as long, and this control changes nothing.

With ``--steps N``: retrains both the real-only and the ``--against`` cell for N steps (5 %
warm-up), to see whether the paired difference holds nearer the plateau.

Scores on the experiment's world and reports, per fraction and metric: ``real`` and the mixed
cell as the experiment trained them, ``real_longer`` and ``mixed_longer`` (this run; the
latter with ``--steps`` only) and the paired differences (mean and std over seeds). Models are
written to ``EXPERIMENT/step-control[-N]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synthscene.experiment import percent
from synthscene.experiment_sparse import over_seeds, train_cells
from synthscene.train.downstream import DownstreamConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, required=True)
    parser.add_argument("--task", default="detection", choices=("detection", "semantic"))
    parser.add_argument("--fractions", default="0.1,1")
    parser.add_argument("--against", default="real+filtered")
    parser.add_argument("--steps", type=int, default=None, help="train both cells this long (default: real only, "
                                                                  "as long as --against)")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once, each in its own process")
    parser.add_argument("--seeds", default=None, help="comma-separated subset of the experiment's seeds")
    args = parser.parse_args()
    models, world = args.experiment / "models", args.experiment / "data" / "world"
    out = args.experiment / ("step-control" if args.steps is None else f"step-control-{args.steps}")
    scored = {(r["metric"], r["real_fraction"], r["setting"]): r
              for r in json.loads((args.experiment / "results.json").read_text())}
    # a Faster R-CNN experiment has box AP only
    metrics = [m for m in {"detection": ("box_ap", "mask_ap"), "semantic": ("miou",)}[args.task]
               if any(key[0] == m for key in scored)]
    seeds = json.loads((args.experiment / "run.json").read_text())["config"]["seeds"]
    if args.seeds:
        seeds = [s for s in seeds if str(s) in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]

    def config(fraction, setting, seed) -> dict:
        return json.loads((models / f"{args.task}-{percent(fraction)}-{setting}-seed{seed}" / "config.json").read_text())

    cells = []
    for fraction in fractions:
        for seed in seeds:
            against = config(fraction, args.against, seed)
            steps = args.steps or against["steps"]
            warmup = against["warmup_steps"] if args.steps is None else max(1, round(0.05 * steps))
            settings = ("real",) if args.steps is None else ("real", args.against)
            for setting in settings:
                cell = DownstreamConfig(**{**config(fraction, setting, seed), "steps": steps, "warmup_steps": warmup})
                cells.append(((fraction, setting, seed), cell,
                              out / f"{args.task}-{percent(fraction)}-{setting}-seed{seed}"))
    retrained: dict[tuple, dict[str, float]] = dict(train_cells(cells, world, args.jobs, progress=True))

    report = {}
    for fraction in fractions:
        for metric in metrics:
            every_seed = json.loads((args.experiment / "run.json").read_text())["config"]["seeds"]
            real = [v for s, v in zip(every_seed, scored[metric, fraction, "real"]["seeds"]) if s in seeds]
            mixed = [v for s, v in zip(every_seed, scored[metric, fraction, args.against]["seeds"]) if s in seeds]
            real_longer = [retrained[fraction, "real", s][metric] for s in seeds]
            entry = {"steps_real": [config(fraction, "real", s)["steps"] for s in seeds],
                     "steps_longer": [c.steps for k, c, _ in cells if k[0] == fraction and k[1] == "real"],
                     "real": over_seeds(real), "real_longer": over_seeds(real_longer), args.against: over_seeds(mixed),
                     "mixed_minus_real": over_seeds(np.subtract(mixed, real)),
                     "mixed_minus_real_longer": over_seeds(np.subtract(mixed, real_longer))}
            line = (f"{metric} at {fraction:g} real: real {100 * np.mean(real):.1f}, real retrained "
                    f"{100 * np.mean(real_longer):.1f}, {args.against} {100 * np.mean(mixed):.1f}")
            if args.steps is not None:
                mixed_longer = [retrained[fraction, args.against, s][metric] for s in seeds]
                entry["mixed_longer"] = over_seeds(mixed_longer)
                entry["mixed_longer_minus_real_longer"] = over_seeds(np.subtract(mixed_longer, real_longer))
                line += f", {args.against} retrained {100 * np.mean(mixed_longer):.1f}"
            report[f"{metric}@{fraction:g}"] = entry
            print(line, flush=True)
    print(json.dumps({"task": args.task, "against": args.against, "steps": args.steps, "seeds": seeds, **report}))


if __name__ == "__main__":
    main()
