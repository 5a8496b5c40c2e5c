"""The data-sparse experiment: does synthetic data help when real data is scarce?

On the shapes world: real fractions (1 %, 10 %, 100 % of the real train split) x settings
{real only, synthetic only, real + synthetic} x metrics {box AP, mask AP (Mask R-CNN),
semantic mIoU (LRASPP / DeepLabV3)}, over several seeds. The synthetic data comes from
text2labels and mosaic runs on the embedded model, made here or passed in. Writes
``results.json`` (records: metric, real_fraction, setting, mean, std, seeds), ``results.md``
and ``results.png``. Synthetic only does not depend on the real fraction: it is trained
once per seed and recorded with ``real_fraction`` 0.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthscene.formats.export import export_run
from synthscene.formats.voc import write_voc_labels
from synthscene.io import make_dir, refuse_nonempty_output, write_json
from synthscene.provenance import run_record
from synthscene.train.data import Source
from synthscene.train.downstream import DownstreamConfig, evaluate_trained, train_downstream


@dataclass(frozen=True)
class Profile:
    real_images: int
    val_images: int
    text2labels_samples: int
    mosaic_samples: int
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    semantic: dict = field(default_factory=dict)
    detection: dict = field(default_factory=dict)


PROFILES = {
    # this 2-core CPU, under an hour
    "quick": Profile(1000, 200, 400, 48, (0, 1), (0.01, 0.1, 1.0),
                     semantic={"model": "lraspp_mobilenet_v3_large", "steps": 400, "batch_size": 16,
                               "learning_rate": 0.05, "image_size": 32, "warmup_steps": 20},
                     detection={"model": "maskrcnn_mobilenet_v3_large_fpn", "steps": 200, "batch_size": 4,
                                "learning_rate": 0.02, "image_size": 96, "warmup_steps": 20}),
    # the real protocol, for a GPU
    "full": Profile(20000, 1000, 5000, 2000, (0, 1, 2), (0.01, 0.1, 1.0),
                    semantic={"model": "deeplabv3_resnet50", "steps": 20000, "batch_size": 32,
                              "learning_rate": 0.02, "image_size": 128, "warmup_steps": 500},
                    detection={"model": "maskrcnn_resnet50_fpn_v2", "steps": 20000, "batch_size": 16,
                               "learning_rate": 0.02, "image_size": 256, "warmup_steps": 500}),
    # seconds: for tests
    "smoke": Profile(40, 12, 6, 0, (0,), (0.1,),
                     semantic={"model": "lraspp_mobilenet_v3_large", "steps": 3, "batch_size": 4,
                               "learning_rate": 0.05, "image_size": 32, "warmup_steps": 1},
                     detection={"model": "maskrcnn_mobilenet_v3_large_fpn", "steps": 2, "batch_size": 2,
                                "learning_rate": 0.01, "image_size": 64, "warmup_steps": 1}),
}
SETTINGS = ("real", "synthetic", "real+synthetic")


def run_experiment(profile_name: str, out: str | Path, synthetic_runs: list[str] | None = None,
                   progress: bool = True) -> list[dict]:
    """Run the experiment into ``out`` (see the module docstring); returns the records."""
    profile = choose_profile(PROFILES, profile_name)
    out = start_experiment(out, {"profile": profile_name, **profile.__dict__, "synthetic_runs": synthetic_runs})

    # 1. data: the real world, its fractions, the synthetic runs and their exports
    from synthscene.world.build import write_world

    world = write_world(out / "data" / "world", n_train=profile.real_images, n_val=profile.val_images, seed=0,
                        progress=progress)
    real = {f: real_subset(world, f, out / "data" / f"real-{percent(f)}") for f in profile.fractions}
    runs = [Path(r) for r in synthetic_runs] if synthetic_runs else _make_synthetic(profile, out / "data", progress)
    synthetic = {kind: [export_run(r, kind, out / "data" / f"{r.name}-{kind}") for r in runs] for kind in ("coco", "voc")}

    # 2. train and score every (task, fraction, setting, seed)
    jobs = _jobs(profile, real, synthetic)
    scores: dict[tuple, list[float]] = {}
    for task, fraction, setting, seed, sources in tqdm(jobs, desc="experiment", disable=not progress):
        params = getattr(profile, task)
        config = DownstreamConfig(task=task, sources=tuple(sources), seed=seed, checkpoint_every=10**9, **params)
        run = train_downstream(config, out / "models" / f"{task}-{percent(fraction)}-{setting}-seed{seed}",
                               progress=False)
        for metric, value in score_on_world(task, run, world).items():
            scores.setdefault((metric, fraction, setting), []).append(value)
    records = [{"metric": metric, "real_fraction": fraction, "setting": setting, "mean": float(np.mean(v)),
                "std": float(np.std(v)), "seeds": v} for (metric, fraction, setting), v in sorted(scores.items())]
    write_json(out / "results.json", records, indent=2)
    (out / "results.md").write_text(results_table(records, profile_name))
    plot_results(records, out / "results.png")
    return records


def choose_profile(profiles: dict, name: str):
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(profiles)}")
    return profiles[name]


def score_on_world(task: str, run: Path, world: Path) -> dict[str, float]:
    """A trained run's scores on the world's val split: mIoU for a segmenter, box AP for a
    detector and mask AP for a Mask R-CNN (clipped at 0: COCOeval's -1 means nothing to score)."""
    if task == "semantic":
        values = {"miou": evaluate_trained(run, world / "val")["miou"]}
    else:
        result = evaluate_trained(run, world / "annotations" / "instances_val.json")
        values = {"box_ap": result["bbox"]["AP"], **({"mask_ap": result["segm"]["AP"]} if "segm" in result else {})}
    return {metric: max(0.0, float(value)) for metric, value in values.items()}


def start_experiment(out: str | Path, config: dict) -> Path:
    """Make an experiment's (new or empty) output folder and record its resolved config."""
    out = Path(out)
    refuse_nonempty_output(out, "choose another --out")
    make_dir(out)
    write_json(out / "run.json", run_record(config), indent=2)
    return out


def percent(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def real_subset(world: Path, fraction: float, out: Path) -> dict[str, Path]:
    """The first ``fraction`` of the world's train split as a COCO set and a VOC set."""
    coco = json.loads((world / "annotations" / "instances_train.json").read_text())
    images = sorted(coco["images"], key=lambda i: i["id"])
    keep = images[: max(1, round(fraction * len(images)))]
    ids = {i["id"] for i in keep}
    (out / "annotations").mkdir(parents=True)
    for folder in ("JPEGImages", "SegmentationClass"):
        (out / folder).mkdir()
    for image in keep:
        source = world / image["file_name"]
        (out / Path(image["file_name"]).parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / image["file_name"])
        shutil.copyfile(source, out / "JPEGImages" / source.name)
        shutil.copyfile(world / "train" / "semantic" / source.name, out / "SegmentationClass" / source.name)
    subset = {**coco, "images": keep, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    write_json(out / "annotations" / "instances.json", subset)
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    write_voc_labels(out / "labels.txt", names)
    return {"coco": out / "annotations" / "instances.json", "voc": out}


def _make_synthetic(profile: Profile, out: Path, progress: bool) -> list[Path]:
    from synthscene.engine import run_spec
    from synthscene.spec import load_spec

    examples = Path(__file__).resolve().parent.parent / "examples"
    runs = []
    spec = load_spec(examples / "shapes-text2labels.yaml")
    spec = spec.model_copy(update={"num_samples": profile.text2labels_samples, "seed": 1})
    runs.append(run_spec(spec, out / "text2labels", progress=progress).out)
    if profile.mosaic_samples:
        spec = load_spec(examples / "shapes-mosaic.yaml")
        spec = spec.model_copy(update={"num_samples": profile.mosaic_samples, "seed": 1})
        runs.append(run_spec(spec, out / "mosaic", progress=progress).out)
    return runs


def _jobs(profile: Profile, real: dict, synthetic: dict) -> list[tuple]:
    jobs = []
    for task, kind in (("semantic", "voc"), ("detection", "coco")):
        synthetic_sources = [Source(str(_annotations(p, kind)), 1.0 / len(synthetic[kind])) for p in synthetic[kind]]
        for seed in profile.seeds:
            jobs.append((task, 0.0, "synthetic", seed, synthetic_sources))
            for fraction in profile.fractions:
                real_source = Source(str(real[fraction][kind]))
                jobs.append((task, fraction, "real", seed, [real_source]))
                jobs.append((task, fraction, "real+synthetic", seed, [real_source, *synthetic_sources]))
    return jobs


def _annotations(export: Path, kind: str) -> Path:
    return export / "annotations" / "instances.json" if kind == "coco" else export


def results_table(records: list[dict], profile: str) -> str:
    lines = [f"# Data-sparse experiment ({profile} profile)", "",
             "| metric | real fraction | real | synthetic | real + synthetic |", "|---|---|---|---|---|"]
    by_key = {(r["metric"], r["real_fraction"], r["setting"]): r for r in records}
    metrics = sorted({r["metric"] for r in records})
    fractions = sorted({r["real_fraction"] for r in records if r["real_fraction"] > 0})

    def cell(key):
        r = by_key.get(key)
        return "" if r is None else f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"

    for metric in metrics:
        for fraction in fractions:
            lines.append(f"| {metric} | {fraction:g} | {cell((metric, fraction, 'real'))} | "
                         f"{cell((metric, 0.0, 'synthetic'))} | {cell((metric, fraction, 'real+synthetic'))} |")
    lines += ["", "Values: mean ± std over seeds, in points (x100). Synthetic only does not use real data; "
              "its value repeats on every row."]
    return "\n".join(lines) + "\n"


def plot_results(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({r["metric"] for r in records})
    fractions = sorted({r["real_fraction"] for r in records if r["real_fraction"] > 0})
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    by_key = {(r["metric"], r["real_fraction"], r["setting"]): r for r in records}
    for axis, metric in zip(axes[0], metrics):
        for setting, style in (("real", "o-"), ("real+synthetic", "s-")):
            points = [by_key.get((metric, f, setting)) for f in fractions]
            axis.errorbar(fractions, [100 * p["mean"] for p in points], [100 * p["std"] for p in points],
                          fmt=style, label=setting, capsize=3)
        synthetic = by_key.get((metric, 0.0, "synthetic"))
        if synthetic:
            axis.axhline(100 * synthetic["mean"], color="grey", linestyle="--", label="synthetic only")
        axis.set_xscale("log")
        axis.set_xlabel("real fraction")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (x100)")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def settings_table(records: list[dict], settings, metrics) -> list[str]:
    """Markdown rows of a (setting x metric) table of records with ``setting``, ``metric``,
    ``mean`` and ``std``, in points (x100)."""
    by_key = {(r["setting"], r["metric"]): r for r in records}
    lines = ["| setting | " + " | ".join(m.replace("_", " ") for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for setting in settings:
        cells = [by_key.get((setting, m)) for m in metrics]
        lines.append(f"| {setting} | " + " | ".join("" if c is None else f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}"
                                                     for c in cells) + " |")
    return lines


def plot_settings(records: list[dict], path: Path, settings, metrics, ylabel: str) -> None:
    """Bars of a (setting x metric) set of records, one group per metric, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r["setting"], r["metric"]): r for r in records}
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        points = [by_key.get((setting, m), {"mean": 0.0, "std": 0.0}) for m in metrics]
        axis.bar(np.arange(len(metrics)) + (k - (len(settings) - 1) / 2) * width, [100 * p["mean"] for p in points],
                 width, yerr=[100 * p["std"] for p in points], capsize=3, label=setting)
    axis.set_xticks(np.arange(len(metrics)), [m.replace("_", " ") for m in metrics])
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
