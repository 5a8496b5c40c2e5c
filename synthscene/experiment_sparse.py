"""The data-sparse experiment, measuring data rather than compute (profiles ``sparse``,
``sparse-smoke``).

The quick profile trains every cell for the same number of steps, so its detectors are
limited by compute (at 800 steps the real-only box AP triples) and cannot show what data
adds. Here every cell follows one rule:

- steps scale with the images a fraction's cells train on: ``ceil(epochs x images /
  batch_size)`` for the fraction's largest cell (its real images plus the synthetic ones),
  clipped to ``[min_steps, max_steps]``, with a linear warm-up over the first
  ``warmup_fraction`` of them; every cell of that fraction trains as many steps, so the
  cells of a fraction differ in their data only (a cell that got more steps than its
  real-only neighbour for having more images measured steps, not data: session 18's
  control). Each task has its own rule (at 50 steps LRASPP predicts background only, at 300
  it reaches 17-20 mIoU and at 600 44-51, so its floor is 600);
- settings per real fraction: ``real``; ``real+synthetic`` (fixed 1:1: half of every batch
  synthetic); ``real+synthetic-auto`` (every image equally likely, real or synthetic: the
  synthetic share of a batch is ``n_synthetic / (n_real + n_synthetic)``, so it falls as
  real data grows); ``real+filtered`` (1:1 with the synthetic sets after ``synthscene filter
  --where FILTER``); and ``synthetic`` only (no real data, recorded at real fraction 0);
- several seeds; each cell records mean and std over seeds and, for a mixed setting, the
  paired difference to ``real`` at the same fraction and seed (mean and std of the
  per-seed differences), since the seeds share the real part's initialisation and draws.

The cells run in ``jobs`` processes, each with its share of the CPU threads (on this 2-core
machine two one-thread cells at once train about 1.35 x as fast as one two-thread cell).
Writes ``results.json``, ``results.md`` and ``results.png`` like the other experiments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from synthscene.experiment import (
    _annotations,
    _make_synthetic,
    choose_profile,
    percent,
    real_subset,
    score_on_world,
    start_experiment,
)
from synthscene.formats.export import export_run
from synthscene.io import write_json
from synthscene.train.data import Source
from synthscene.train.downstream import DownstreamConfig, train_downstream

MIXED = ("real+synthetic", "real+synthetic-auto", "real+filtered")
SETTINGS = ("real", "synthetic", *MIXED)
SYNTHETIC_WEIGHTS = ("both", "fixed", "auto")


TASKS = ("semantic", "detection")


@dataclass(frozen=True)
class StepRule:
    """Steps of a cell: ``epochs`` passes over its images, clipped to ``[min_steps, max_steps]``."""

    epochs: float
    min_steps: int
    max_steps: int
    warmup_fraction: float = 0.05

    def steps(self, images: int, batch_size: int) -> tuple[int, int]:
        """(steps, warm-up steps) of a cell that trains on ``images`` distinct images."""
        steps = min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * images / batch_size)))
        return steps, max(1, round(self.warmup_fraction * steps))

    def describe(self) -> str:
        return (f"{self.epochs:g} epochs of the images of the fraction's largest cell, clipped to "
                f"[{self.min_steps}, {self.max_steps}], for every cell of the fraction")


@dataclass(frozen=True)
class SparseProfile:
    real_images: int
    val_images: int
    text2labels_samples: int
    mosaic_samples: int
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    steps: dict[str, StepRule]  # per task
    # instances kept in the filtered synthetic sets: about the lowest tenth by objectness
    # dropped (chosen on a held-out run, seed 11; see README "Which instances to trust")
    filter_where: str = "score >= 0.6"
    semantic: dict = field(default_factory=dict)
    detection: dict = field(default_factory=dict)
    jobs: int = 1  # cells trained at once, in separate processes


SPARSE_PROFILES = {
    # this 2-core CPU, both tasks in one run: 54 cells (27 per task) in two processes.
    # Detection measures box AP with Faster R-CNN: the mask branch made a Mask R-CNN step
    # 2.5 x as long (1.22 against 0.48 s, batch 4), too long for its cells to train equally
    # long in the time; the quick profile reports mask AP.
    "sparse": SparseProfile(500, 200, 200, 32, (0, 1, 2), (0.1, 1.0),
                            steps={"semantic": StepRule(16.0, 600, 900), "detection": StepRule(4.0, 250, 400)},
                            semantic={"model": "lraspp_mobilenet_v3_large", "batch_size": 16, "learning_rate": 0.05,
                                      "image_size": 32},
                            detection={"model": "fasterrcnn_mobilenet_v3_large_fpn", "batch_size": 4,
                                       "learning_rate": 0.02, "image_size": 96},
                            jobs=2),
    # seconds: for tests
    "sparse-smoke": SparseProfile(40, 12, 6, 0, (0,), (0.1,),
                                  steps={"semantic": StepRule(0.5, 1, 3), "detection": StepRule(0.5, 1, 3)},
                                  filter_where="score >= 0.0",
                                  semantic={"model": "lraspp_mobilenet_v3_large", "batch_size": 4,
                                            "learning_rate": 0.05, "image_size": 32},
                                  detection={"model": "maskrcnn_mobilenet_v3_large_fpn", "batch_size": 2,
                                             "learning_rate": 0.01, "image_size": 64}),
}


def mixed_sources(setting: str, real: Source | None, real_count: int, synthetic: list[tuple[str, int]],
                  filtered: list[tuple[str, int]]) -> list[Source]:
    """The weighted sources of a setting (``Source.weight`` is a source's share of the draws)."""
    if setting == "synthetic":
        return [Source(path, 1.0 / len(synthetic)) for path, _ in synthetic]
    if setting == "real":
        return [real]
    if setting == "real+synthetic":
        return [real, *(Source(path, 1.0 / len(synthetic)) for path, _ in synthetic)]
    if setting == "real+filtered":
        return [real, *(Source(path, 1.0 / len(filtered)) for path, _ in filtered)]
    if setting == "real+synthetic-auto":  # uniform over images: a source's share is its size
        return [Source(real.path, float(real_count)), *(Source(path, float(n)) for path, n in synthetic)]
    raise ValueError(f"unknown setting {setting!r}")


def run_sparse_experiment(profile_name: str, out: str | Path, synthetic_runs: list[str] | None = None,
                          synthetic_weight: str = "both", tasks: tuple[str, ...] = TASKS,
                          jobs: int | None = None, progress: bool = True) -> list[dict]:
    """Run the experiment into ``out`` (see the module docstring); returns the records.
    ``synthetic_weight``: which 1:1 / auto mixed settings to train (both by default);
    ``tasks``: the downstream tasks to train (semantic and detection by default); ``jobs``:
    cells trained at once (default: the profile's)."""
    from synthscene.filter import filter_run
    from synthscene.store import open_run
    from synthscene.world.build import write_world

    profile = choose_profile(SPARSE_PROFILES, profile_name)
    if synthetic_weight not in SYNTHETIC_WEIGHTS:
        raise ValueError(f"unknown synthetic weight {synthetic_weight!r}; choose one of {', '.join(SYNTHETIC_WEIGHTS)}")
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"unknown task in {list(tasks)}; choose from {', '.join(TASKS)}")
    tasks = tuple(t for t in TASKS if t in tasks)
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    settings = [s for s in SETTINGS if not (synthetic_weight == "fixed" and s == "real+synthetic-auto")
                and not (synthetic_weight == "auto" and s == "real+synthetic")]
    out = start_experiment(out, {"profile": profile_name, **asdict(profile), "synthetic_runs": synthetic_runs,
                                 "settings": settings, "tasks": list(tasks), "jobs": jobs or profile.jobs})

    # 1. data: the world, its real fractions, the synthetic runs, their filtered views, exports
    data = out / "data"
    world = write_world(data / "world", n_train=profile.real_images, n_val=profile.val_images, seed=0,
                        progress=progress)
    real = {f: real_subset(world, f, data / f"real-{percent(f)}") for f in profile.fractions}
    runs = [Path(r) for r in synthetic_runs] if synthetic_runs else _make_synthetic(profile, data, progress)
    views = []
    for r in runs:
        filter_run(r, data / f"{r.name}-filtered", where=profile.filter_where)
        views.append(data / f"{r.name}-filtered")
    exports = {}
    for name, group in (("synthetic", runs), ("filtered", views)):
        for kind in ("coco", "voc"):
            exports[name, kind] = [(str(_annotations(export_run(r, kind, data / f"{r.name}-{kind}"), kind)),
                                    sum(1 for _ in open_run(r).records())) for r in group]

    # 2. train and score every (task, fraction, setting, seed); a fraction's cells share its steps
    cells = []
    for task in tasks:
        kind = {"semantic": "voc", "detection": "coco"}[task]
        params = dict(getattr(profile, task))
        for fraction in (0.0, *profile.fractions):
            real_count = max(1, round(fraction * profile.real_images))
            real_source = Source(str(real[fraction][kind])) if fraction else None
            fraction_settings = [s for s in settings if (fraction == 0.0) == (s == "synthetic")]
            images = {}
            for setting in fraction_settings:
                images[setting] = real_count if fraction else 0
                if setting != "real":
                    images[setting] += sum(n for _, n in exports["filtered" if setting == "real+filtered"
                                                                  else "synthetic", kind])
            steps, warmup = profile.steps[task].steps(max(images.values()), params["batch_size"])
            for seed in profile.seeds:
                for setting in fraction_settings:
                    sources = mixed_sources(setting, real_source, real_count, exports["synthetic", kind],
                                            exports["filtered", kind])
                    config = DownstreamConfig(task=task, sources=tuple(sources), seed=seed, steps=steps,
                                              warmup_steps=warmup, checkpoint_every=10**9, **params)
                    cells.append(((fraction, setting, seed), config,
                                  out / "models" / f"{task}-{percent(fraction)}-{setting}-seed{seed}"))
    # longest first (a detection step costs several segmentation steps): the last cells to finish are short
    cells.sort(key=lambda cell: (cell[1].task != "detection", -cell[1].steps))
    scores: dict[tuple, dict[int, float]] = {}
    for (fraction, setting, seed), values in train_cells(cells, world, jobs or profile.jobs, progress):
        for metric, value in values.items():
            scores.setdefault((metric, fraction, setting), {})[seed] = value
    records = summarise(scores)
    write_json(out / "results.json", records, indent=2)
    (out / "results.md").write_text(sparse_table(records, profile_name, profile))
    plot_sparse(records, out / "results.png")
    return records


def train_cells(cells: list[tuple], world: Path, jobs: int, progress: bool):
    """Train and score every (key, config, out) cell; yields (key, scores) as cells finish.
    With ``jobs`` > 1 the cells run in that many spawned processes (not forked: a forked
    torch process can hang in its thread pool), splitting this machine's torch threads."""
    bar = tqdm(total=len(cells), desc="experiment", disable=not progress)
    if jobs == 1:
        for key, config, run in cells:
            yield key, _train_and_score(config, run, world)
            bar.update()
        bar.close()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_train_and_score, config, run, world): key for key, config, run in cells}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
                bar.update()
        except BaseException:  # a failed cell (or Ctrl-C) stops the run: do not train the rest first
            pool.shutdown(cancel_futures=True)
            raise
    bar.close()


def _train_and_score(config: DownstreamConfig, run: Path, world: Path) -> dict[str, float]:
    return score_on_world(config.task, train_downstream(config, run, progress=False), world)


def summarise(scores: dict[tuple, dict[int, float]]) -> list[dict]:
    """Records with mean / std over seeds and, for mixed settings, the paired difference to
    ``real`` at the same fraction and seed."""
    records = []
    for (metric, fraction, setting), by_seed in sorted(scores.items()):
        values = [by_seed[s] for s in sorted(by_seed)]
        record = {"metric": metric, "real_fraction": fraction, "setting": setting, **over_seeds(values)}
        base = scores.get((metric, fraction, "real"))
        if setting in MIXED and base:
            paired = [by_seed[s] - base[s] for s in sorted(by_seed) if s in base]
            record["difference"] = over_seeds(paired)
        records.append(record)
    return records


def over_seeds(values) -> dict:
    """Mean, std and the values of one cell (or one paired difference) over its seeds."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": values}


def sparse_table(records: list[dict], name: str, profile: SparseProfile) -> str:
    by_key = {(r["metric"], r["real_fraction"], r["setting"]): r for r in records}
    rules = "; ".join(f"{task}: {rule.describe()}" for task, rule in profile.steps.items())
    lines = [f"# Data-sparse experiment ({name} profile; steps per cell: {rules})", "",
             "| metric | real fraction | setting | mean ± std | paired difference to real |", "|---|---|---|---|---|"]
    for metric in sorted({r["metric"] for r in records}):
        for fraction in sorted({r["real_fraction"] for r in records}):
            for setting in SETTINGS:
                r = by_key.get((metric, fraction, setting))
                if r is None:
                    continue
                difference = r.get("difference")
                cell = "" if difference is None else f"{100 * difference['mean']:+.1f} ± {100 * difference['std']:.1f}"
                lines.append(f"| {metric} | {fraction:g} | {setting} | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} "
                             f"| {cell} |")
    lines += ["", "Values in points (x100), over seeds. Synthetic only uses no real data (real fraction 0)."]
    return "\n".join(lines) + "\n"


def plot_sparse(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({r["metric"] for r in records})
    fractions = sorted({r["real_fraction"] for r in records if r["real_fraction"] > 0})
    by_key = {(r["metric"], r["real_fraction"], r["setting"]): r for r in records}
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for setting in ("real", *MIXED):
            points = [by_key.get((metric, f, setting)) for f in fractions]
            if all(points):
                axis.errorbar(fractions, [100 * p["mean"] for p in points], [100 * p["std"] for p in points],
                              fmt="o-", label=setting, capsize=3)
        synthetic = by_key.get((metric, 0.0, "synthetic"))
        if synthetic:
            axis.axhline(100 * synthetic["mean"], color="grey", linestyle="--", label="synthetic only")
        axis.set_xscale("log")
        axis.set_xlabel("real fraction")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (x100)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
