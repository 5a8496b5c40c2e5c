"""Experiments on data derived from scarce real data: do restyled copies (InstSynth) or
layouts rearranged from its instances (iPOSE) help?

On the shapes world:
1. data: a world (also in the Cityscapes layout, the restyle's source); the first
   ``real_fraction`` of its train split (the data-sparse experiment's real subset, so its
   real-only cells are the same runs);
2. derived data, with the embedded model, ``variants`` samples per real image:
   - ``restyle``: every image's largest instances regenerated inside their masks, the real
     labels kept (``method: restyle``);
   - ``layout``: new layouts of the real subset's own instance shapes (random positions,
     sizes, counts, occlusion; parts of boxes and stars inferred by the part model), drawn by
     the ControlNet shipped beside the model; the labels are the layouts (``method: layout``);
3. segmenters (mIoU) and Mask R-CNNs (box / mask AP) trained on the real subset alone and
   on the real subset + the derived data (one pool: every image, real or derived, drawn
   equally often), with the data-sparse quick profile's settings, over several seeds, scored
   on the real val split.
Writes ``results.json`` (records: setting, metric, mean, std, seeds), ``results.md`` and
``results.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from synthscene.experiment import PROFILES

METRICS = ("miou", "box_ap", "mask_ap")
# what each method's derived samples are called in the settings and tables
DERIVED_NAMES = {"restyle": "restyled", "layout": "layout"}


def settings_of(method: str) -> tuple[str, str]:
    return "real", f"real+{DERIVED_NAMES[method]}"


@dataclass(frozen=True)
class DerivedProfile:
    method: Literal["restyle", "layout"]
    real_images: int
    val_images: int
    real_fraction: float
    variants: int  # derived samples per real image (restyle: per image with an instance to restyle)
    steps: int  # sampler steps (restyle: the first ``start`` of them are skipped)
    seeds: tuple[int, ...]
    semantic: dict = field(default_factory=dict)  # DownstreamConfig fields
    detection: dict = field(default_factory=dict)


_QUICK = {"semantic": PROFILES["quick"].semantic, "detection": PROFILES["quick"].detection}
_SMOKE = {"semantic": PROFILES["smoke"].semantic, "detection": PROFILES["smoke"].detection}
DERIVED_PROFILES = {
    # this 2-core CPU, about an hour each: the data-sparse quick profile's 10 % cell
    "restyle": DerivedProfile("restyle", 1000, 200, 0.1, 2, 25, (0, 1), **_QUICK),
    "layout": DerivedProfile("layout", 1000, 200, 0.1, 2, 25, (0, 1), **_QUICK),
    # seconds: for tests
    "restyle-smoke": DerivedProfile("restyle", 40, 12, 0.1, 1, 4, (0,), **_SMOKE),
    "layout-smoke": DerivedProfile("layout", 40, 12, 0.1, 1, 4, (0,), **_SMOKE),
}


def _example(name: str):
    from synthscene.spec import load_spec

    example = load_spec(Path(__file__).resolve().parent.parent / "examples" / name)
    return example.model_dump(mode="json", exclude_defaults=True)


def restyle_spec(cityscapes: Path, num_samples: int, variants: int, steps: int, model: str = "embedded"):
    """The restyle spec the experiment runs: examples/shapes-restyle.yaml on the train split
    of a Cityscapes-layout world (its first ``num_samples`` (image, variant) pairs)."""
    from synthscene.spec import validate_spec

    data = _example("shapes-restyle.yaml")
    data.update(method="restyle", name="restyle-experiment", model=model, num_samples=num_samples, seed=1)
    data["sampler"] = {**data.get("sampler", {}), "steps": steps}
    data["restyle"] = {**data["restyle"], "variants_per_instance": variants,
                       "source": {"format": "cityscapes", "path": str(cityscapes), "split": "train"}}
    return validate_spec(data)


def layout_spec(coco: Path, image_root: Path, num_samples: int, steps: int, model: str = "embedded"):
    """The layout spec the experiment runs: examples/shapes-layout.yaml (sampled layouts, its
    tuned ControlNet settings) with the shapes of a COCO set's instances."""
    from synthscene.spec import validate_spec

    data = _example("shapes-layout.yaml")
    data.update(method="layout", name="layout-experiment", model=model, num_samples=num_samples, seed=1)
    data["sampler"] = {**data.get("sampler", {}), "steps": steps}
    data["layout"] = {**data["layout"], "mode": "sampled",
                      "source": {"format": "coco", "path": str(coco), "image_root": str(image_root)}}
    return validate_spec(data)


def run_derived_experiment(profile_name: str, out: str | Path, model: str = "embedded",
                           progress: bool = True) -> list[dict]:
    """Run the experiment into ``out`` (see the module docstring); returns the records."""
    from synthscene.experiment import choose_profile, percent, real_subset, score_on_world, start_experiment
    from synthscene.formats.export import export_run
    from synthscene.io import write_json, write_text
    from synthscene.train.data import Source
    from synthscene.train.downstream import DownstreamConfig, train_downstream
    from synthscene.world.build import write_world

    profile = choose_profile(DERIVED_PROFILES, profile_name)
    settings = settings_of(profile.method)
    out = start_experiment(out, {"profile": profile_name, **profile.__dict__, "model": model})

    # 1. data, 2. derived samples
    world = write_world(out / "data" / "world", n_train=profile.real_images, n_val=profile.val_images, seed=0,
                        progress=progress, cityscapes=profile.method == "restyle")
    real = real_subset(world, profile.real_fraction, out / "data" / f"real-{percent(profile.real_fraction)}")
    n_real = len(json.loads(real["coco"].read_text())["images"])
    derive = _restyled if profile.method == "restyle" else _layouts
    derived_run, n_derived = derive(profile, world, real, n_real, out / "data", model, progress)
    name = DERIVED_NAMES[profile.method]
    derived = {kind: export_run(derived_run, kind, out / "data" / f"{name}-{kind}") for kind in ("coco", "voc")}

    # 3. train and score; the pool draws every image equally often (weights ~ sizes)
    sizes = {"real": n_real, name: n_derived}
    sources = {
        (task, setting): [Source(str(real[kind]), n_real)]
        + ([Source(str(_annotations(derived[kind], kind)), n_derived)] if setting == settings[1] else [])
        for task, kind in (("semantic", "voc"), ("detection", "coco")) for setting in settings}
    jobs = [(task, setting, seed) for task in ("semantic", "detection") for setting in settings for seed in profile.seeds]
    scores: dict[tuple[str, str], list[float]] = {}
    for task, setting, seed in tqdm(jobs, desc=f"{profile.method} experiment", disable=not progress):
        config = DownstreamConfig(task=task, sources=tuple(sources[task, setting]), seed=seed,
                                  checkpoint_every=10**9, **getattr(profile, task))
        run = train_downstream(config, out / "models" / f"{task}-{setting}-seed{seed}", progress=False)
        for metric, value in score_on_world(task, run, world).items():
            scores.setdefault((setting, metric), []).append(value)
    records = [{"setting": s, "metric": m, "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": v}
               for (s, m), v in sorted(scores.items())]
    write_json(out / "results.json", records, indent=2)
    write_text(out / "results.md", results_table(records, profile_name, profile, sizes))
    plot_results(records, out / "results.png", settings)
    return records


def _restyled(profile: DerivedProfile, world: Path, real: dict, n_real: int, out: Path, model: str,
              progress: bool) -> tuple[Path, int]:
    """Restyled copies of the real subset: (run folder, samples)."""
    from synthscene.engine import run_spec
    from synthscene.formats.cityscapes import CityscapesSource
    from synthscene.methods.restyle import chosen_instances

    # the Cityscapes train split holds the same images in the same order (image id = index + 1)
    source = CityscapesSource(world / "cityscapes", "train")
    probe = restyle_spec(world / "cityscapes", 1, profile.variants, profile.steps, model)
    restylable = sum(bool(chosen_instances(source.instances(i), probe.restyle)) for i in range(n_real))
    spec = restyle_spec(world / "cityscapes", restylable * profile.variants, profile.variants, profile.steps, model)
    return run_spec(spec, out / "restyled", progress=progress).out, spec.num_samples


def _layouts(profile: DerivedProfile, world: Path, real: dict, n_real: int, out: Path, model: str,
             progress: bool) -> tuple[Path, int]:
    """Sampled layouts of the real subset's instance shapes, drawn: (run folder, samples)."""
    from synthscene.engine import run_spec

    spec = layout_spec(real["coco"], real["coco"].parent.parent, n_real * profile.variants, profile.steps, model)
    return run_spec(spec, out / "layout", progress=progress).out, spec.num_samples


def _annotations(export: Path, kind: str) -> Path:
    return export / "annotations" / "instances.json" if kind == "coco" else export


def results_table(records: list[dict], profile_name: str, profile: DerivedProfile, sizes: dict) -> str:
    from synthscene.experiment import settings_table

    settings = settings_of(profile.method)
    name = DERIVED_NAMES[profile.method]
    what = {"restyle": f"restyled copies of them ({profile.variants} per image with an instance to restyle)",
            "layout": f"layouts rearranged from their instance shapes and drawn by the ControlNet "
                      f"({profile.variants} per real image)"}[profile.method]
    by_key = {(r["setting"], r["metric"]): r for r in records}
    title = {"restyle": "Restyle", "layout": "Layout"}[profile.method]
    lines = [f"# {title} experiment ({profile_name} profile)", "",
             f"{sizes['real']} real images ({100 * profile.real_fraction:g} % of the world's train split) and "
             f"{sizes[name]} {what}, pooled so that every image is drawn equally often.", "",
             *settings_table(records, settings, METRICS), "", f"Gain of {settings[1]} over real (points, "
             "mean; beyond the seed spread when larger than the sum of both stds):"]
    for metric in METRICS:
        a, b = by_key.get((settings[0], metric)), by_key.get((settings[1], metric))
        if a and b:
            gain, spread = 100 * (b["mean"] - a["mean"]), 100 * (a["std"] + b["std"])
            lines.append(f"- {metric.replace('_', ' ')}: {gain:+.1f} (spread {spread:.1f})")
    lines += ["", "Values: on the real val split, mean ± std over seeds, in points (x100)."]
    return "\n".join(lines) + "\n"


def plot_results(records: list[dict], path: Path, settings: tuple[str, str]) -> None:
    from synthscene.experiment import plot_settings

    plot_settings(records, path, settings, METRICS, "score (x100)")
