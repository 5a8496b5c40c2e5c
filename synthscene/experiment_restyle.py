"""The restyle experiment: do restyled copies of scarce real data help (InstSynth)?

On the shapes world:
1. data: a world (also in the Cityscapes layout, the restyle's source); the first
   ``real_fraction`` of its train split (the data-sparse experiment's real subset, so its
   real-only cells are the same runs);
2. ``method: restyle`` on the same images with the embedded model: ``variants`` copies of
   every image, its largest instances regenerated inside their masks, the real labels kept;
3. segmenters (mIoU) and Mask R-CNNs (box / mask AP) trained on the real subset alone and
   on the real subset + its restyled copies (one pool: every image, real or restyled, drawn
   equally often), with the data-sparse quick profile's settings, over several seeds, scored
   on the real val split.
Writes ``results.json`` (records: setting, metric, mean, std, seeds), ``results.md`` and
``results.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthscene.experiment import PROFILES

SETTINGS = ("real", "real+restyled")
METRICS = ("miou", "box_ap", "mask_ap")


@dataclass(frozen=True)
class RestyleProfile:
    real_images: int
    val_images: int
    real_fraction: float
    variants: int  # restyled copies of each real image
    steps: int  # sampler steps of the restyle (the first ``start`` of them are skipped)
    seeds: tuple[int, ...]
    semantic: dict = field(default_factory=dict)  # DownstreamConfig fields
    detection: dict = field(default_factory=dict)


RESTYLE_PROFILES = {
    # this 2-core CPU, under an hour: the data-sparse quick profile's 10 % cell
    "restyle": RestyleProfile(1000, 200, 0.1, 2, 25, (0, 1),
                              semantic=PROFILES["quick"].semantic, detection=PROFILES["quick"].detection),
    # seconds: for tests
    "restyle-smoke": RestyleProfile(40, 12, 0.1, 1, 4, (0,),
                                    semantic=PROFILES["smoke"].semantic, detection=PROFILES["smoke"].detection),
}


def restyle_spec(cityscapes: Path, num_samples: int, variants: int, steps: int, model: str = "embedded"):
    """The restyle spec the experiment runs: examples/shapes-restyle.yaml on the train split
    of a Cityscapes-layout world (its first ``num_samples`` (image, variant) pairs)."""
    from synthscene.spec import load_spec, validate_spec

    example = load_spec(Path(__file__).resolve().parent.parent / "examples" / "shapes-restyle.yaml")
    data = example.model_dump(mode="json", exclude_defaults=True)
    data.update(method="restyle", name="restyle-experiment", model=model, num_samples=num_samples, seed=1)
    data["sampler"] = {**data.get("sampler", {}), "steps": steps}
    data["restyle"] = {**data["restyle"], "variants_per_instance": variants,
                       "source": {"format": "cityscapes", "path": str(cityscapes), "split": "train"}}
    return validate_spec(data)


def run_restyle_experiment(profile_name: str, out: str | Path, model: str = "embedded",
                           progress: bool = True) -> list[dict]:
    """Run the experiment into ``out`` (see the module docstring); returns the records."""
    from synthscene.engine import run_spec
    from synthscene.experiment import choose_profile, percent, real_subset, score_on_world, start_experiment
    from synthscene.formats.cityscapes import CityscapesSource
    from synthscene.formats.export import export_run
    from synthscene.io import write_json, write_text
    from synthscene.methods.restyle import chosen_instances
    from synthscene.train.data import Source
    from synthscene.train.downstream import DownstreamConfig, train_downstream
    from synthscene.world.build import write_world

    profile = choose_profile(RESTYLE_PROFILES, profile_name)
    out = start_experiment(out, {"profile": profile_name, **profile.__dict__, "model": model})

    # 1. data, 2. restyled copies
    world = write_world(out / "data" / "world", n_train=profile.real_images, n_val=profile.val_images, seed=0,
                        progress=progress, cityscapes=True)
    real = real_subset(world, profile.real_fraction, out / "data" / f"real-{percent(profile.real_fraction)}")
    # the Cityscapes train split holds the same images in the same order (image id = index + 1)
    n_real = len(json.loads(real["coco"].read_text())["images"])
    source = CityscapesSource(world / "cityscapes", "train")
    probe = restyle_spec(world / "cityscapes", 1, profile.variants, profile.steps, model)
    restylable = sum(bool(chosen_instances(source.instances(i), probe.restyle)) for i in range(n_real))
    spec = restyle_spec(world / "cityscapes", restylable * profile.variants, profile.variants, profile.steps, model)
    restyled_run = run_spec(spec, out / "data" / "restyled", progress=progress).out
    restyled = {kind: export_run(restyled_run, kind, out / "data" / f"restyled-{kind}") for kind in ("coco", "voc")}

    # 3. train and score; the pool draws every image equally often (weights ~ sizes)
    sizes = {"real": n_real, "restyled": spec.num_samples}
    sources = {
        (task, setting): [Source(str(real[kind]), sizes["real"])]
        + ([Source(str(_annotations(restyled[kind], kind)), sizes["restyled"])] if setting == SETTINGS[1] else [])
        for task, kind in (("semantic", "voc"), ("detection", "coco")) for setting in SETTINGS}
    jobs = [(task, setting, seed) for task in ("semantic", "detection") for setting in SETTINGS for seed in profile.seeds]
    scores: dict[tuple[str, str], list[float]] = {}
    for task, setting, seed in tqdm(jobs, desc="restyle experiment", disable=not progress):
        config = DownstreamConfig(task=task, sources=tuple(sources[task, setting]), seed=seed,
                                  checkpoint_every=10**9, **getattr(profile, task))
        run = train_downstream(config, out / "models" / f"{task}-{setting}-seed{seed}", progress=False)
        for metric, value in score_on_world(task, run, world).items():
            scores.setdefault((setting, metric), []).append(value)
    records = [{"setting": s, "metric": m, "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": v}
               for (s, m), v in sorted(scores.items())]
    write_json(out / "results.json", records, indent=2)
    write_text(out / "results.md", results_table(records, profile_name, profile, sizes))
    plot_results(records, out / "results.png")
    return records


def _annotations(export: Path, kind: str) -> Path:
    return export / "annotations" / "instances.json" if kind == "coco" else export


def results_table(records: list[dict], profile_name: str, profile: RestyleProfile, sizes: dict) -> str:
    from synthscene.experiment import settings_table

    by_key = {(r["setting"], r["metric"]): r for r in records}
    lines = [f"# Restyle experiment ({profile_name} profile)", "",
             f"{sizes['real']} real images ({100 * profile.real_fraction:g} % of the world's train split) and "
             f"{sizes['restyled']} restyled copies of them ({profile.variants} per image with an instance to "
             "restyle), pooled so that every image is drawn equally often.", "",
             *settings_table(records, SETTINGS, METRICS), "", "Gain of real + restyled over real (points, "
             "mean; beyond the seed spread when larger than the sum of both stds):"]
    for metric in METRICS:
        a, b = by_key.get((SETTINGS[0], metric)), by_key.get((SETTINGS[1], metric))
        if a and b:
            gain, spread = 100 * (b["mean"] - a["mean"]), 100 * (a["std"] + b["std"])
            lines.append(f"- {metric.replace('_', ' ')}: {gain:+.1f} (spread {spread:.1f})")
    lines += ["", "Values: on the real val split, mean ± std over seeds, in points (x100)."]
    return "\n".join(lines) + "\n"


def plot_results(records: list[dict], path: Path) -> None:
    from synthscene.experiment import plot_settings

    plot_settings(records, path, SETTINGS, METRICS, "score (x100)")
