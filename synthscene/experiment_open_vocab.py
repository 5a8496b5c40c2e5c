"""The open-vocabulary experiment: can grounding-labelled synthetic data teach a detector
classes its real data never labelled?

On the shapes world, split into base classes (ball, leaf, box, hat) and novel classes (star,
ring):
1. data: a world; its train split with only the base classes' annotations (``real base``;
   novel objects stay in the images, unlabelled, as in COCO's open-vocabulary split);
2. a teacher detector trained on real base (it knows only the base classes);
3. ``train-grounding`` on the embedded model with that teacher; a grounding-labelled
   synthetic set (prompts naming one or two of all six classes, boxes with score >= 0.4);
4. detectors trained on real base, on real base + synthetic, and on the real data with every
   class labelled (the upper bound), scored on the real val split: box AP50 over the novel,
   the base and all classes, over several seeds.
Writes ``results.json`` (records: setting, metric, mean, std, seeds), ``results.md`` and
``results.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthscene.io import write_json, write_text

BASE, NOVEL = ("ball", "leaf", "box", "hat"), ("star", "ring")
SETTINGS = ("real base", "real base + synthetic", "real all (upper bound)")
METRICS = ("ap50_novel", "ap50_base", "ap50_all")


@dataclass(frozen=True)
class OpenVocabProfile:
    real_images: int
    val_images: int
    synthetic_samples: int
    seeds: tuple[int, ...]
    teacher: dict = field(default_factory=dict)  # DownstreamConfig fields
    grounding: dict = field(default_factory=dict)  # GroundingTrainConfig fields
    detector: dict = field(default_factory=dict)  # DownstreamConfig fields
    score_threshold: float = 0.4


OPEN_VOCAB_PROFILES = {
    # this 2-core CPU, about an hour
    "open-vocab": OpenVocabProfile(
        1000, 200, 600, (0, 1),
        teacher={"model": "fasterrcnn_mobilenet_v3_large_fpn", "steps": 800, "batch_size": 4, "image_size": 96},
        grounding={"images_per_base_class": 100, "images_per_novel_class": 200, "steps": 1500, "batch_size": 16},
        detector={"model": "fasterrcnn_mobilenet_v3_large_fpn", "steps": 400, "batch_size": 4, "image_size": 96,
                  "warmup_steps": 20}),
    # seconds: for tests
    "open-vocab-smoke": OpenVocabProfile(
        40, 12, 6, (0,),
        teacher={"model": "fasterrcnn_mobilenet_v3_large_fpn", "steps": 2, "batch_size": 2, "image_size": 32,
                 "warmup_steps": 1},
        grounding={"images_per_base_class": 1, "images_per_novel_class": 1, "steps": 2, "batch_size": 2,
                   "steps_per_image": 2, "teacher_threshold": 0.0, "novel_threshold": 0.0, "warmup_steps": 1,
                   "head": {"width": 16, "queries": 4, "layers": 1, "heads": 2}},
        detector={"model": "fasterrcnn_mobilenet_v3_large_fpn", "steps": 2, "batch_size": 2, "image_size": 32,
                  "warmup_steps": 1},
        score_threshold=0.0),
}


def without_annotations_of(dataset: dict, names) -> dict:
    """A copy of a COCO dict whose annotations of the classes ``names`` are gone (the
    categories stay, so a detector trained on it has an output for them)."""
    ids = {c["id"] for c in dataset["categories"] if c["name"] in set(names)}
    return {**dataset, "annotations": [a for a in dataset["annotations"] if a["category_id"] not in ids]}


def run_open_vocab(profile_name: str, out: str | Path, model: str = "embedded", progress: bool = True) -> list[dict]:
    """Run the experiment into ``out`` (see the module docstring); returns the records."""
    from synthscene.engine import run_spec
    from synthscene.experiment import choose_profile, start_experiment
    from synthscene.formats.coco import keep_categories
    from synthscene.formats.export import export_run
    from synthscene.grounding.train import GroundingTrainConfig, train_grounding
    from synthscene.spec import validate_spec
    from synthscene.train.data import Source
    from synthscene.train.downstream import DownstreamConfig, train_downstream
    from synthscene.world import CLASS_NAMES
    from synthscene.world.build import write_world

    profile = choose_profile(OPEN_VOCAB_PROFILES, profile_name)
    out = start_experiment(out, {"profile": profile_name, **profile.__dict__, "model": model, "base": BASE,
                                 "novel": NOVEL})

    # 1. data
    world = write_world(out / "data" / "world", n_train=profile.real_images, n_val=profile.val_images, seed=0,
                        progress=progress)
    truth = json.loads((world / "annotations" / "instances_train.json").read_text())
    files = {"real base": world / "annotations" / "instances_train_base.json",
             "teacher": world / "annotations" / "instances_train_base_only.json"}
    write_json(files["real base"], without_annotations_of(truth, NOVEL))
    write_json(files["teacher"], keep_categories(truth, BASE))

    # 2. teacher, 3. head and synthetic set
    teacher = train_downstream(DownstreamConfig(task="detection", sources=(Source(str(files["teacher"])),),
                                                checkpoint_every=10**9, **profile.teacher), out / "teacher",
                               progress=progress)
    grounding = GroundingTrainConfig(model=model, teacher=str(teacher), base_classes=BASE, novel_classes=NOVEL,
                                     **profile.grounding)
    head = train_grounding(grounding, out / "grounding", progress=progress)
    spec = validate_spec({
        "name": "open-vocab-synthetic", "method": "grounding", "model": model,
        "num_samples": profile.synthetic_samples, "seed": 1, "shard_size": 16, "batch_size": 16,
        "classes": [{"name": n} for n in CLASS_NAMES], "objects_per_prompt": [1, 2],
        "prompt_templates": [grounding.prompt_template],
        "sampler": {"steps": grounding.steps_per_image, "guidance": grounding.guidance},
        "grounding": {"head": str(head), "novel_classes": list(NOVEL), "score_threshold": profile.score_threshold},
    })
    synthetic_run = run_spec(spec, out / "data" / "synthetic", progress=progress).out
    synthetic = export_run(synthetic_run, "coco", out / "data" / "synthetic-coco") / "annotations" / "instances.json"

    # 4. detectors
    sources = {"real base": [Source(str(files["real base"]))],
               "real base + synthetic": [Source(str(files["real base"])), Source(str(synthetic))],
               "real all (upper bound)": [Source(str(world / "annotations" / "instances_train.json"))]}
    scores: dict[tuple[str, str], list[float]] = {}
    jobs = [(setting, seed) for setting in SETTINGS for seed in profile.seeds]
    for setting, seed in tqdm(jobs, desc="open-vocab detectors", disable=not progress):
        config = DownstreamConfig(task="detection", sources=tuple(sources[setting]), seed=seed,
                                  checkpoint_every=10**9, **profile.detector)
        name = setting.split(" (")[0].replace(" + ", "+").replace(" ", "-")
        run = train_downstream(config, out / "models" / f"{name}-seed{seed}", progress=False)
        for metric, value in score_detector(run, world / "annotations" / "instances_val.json").items():
            scores.setdefault((setting, metric), []).append(value)
    records = [{"setting": s, "metric": m, "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": v}
               for (s, m), v in sorted(scores.items())]
    write_json(out / "results.json", records, indent=2)
    write_text(out / "results.md", results_table(records, profile_name))
    plot_results(records, out / "results.png")
    return records


def score_detector(run: Path, val: Path) -> dict[str, float]:
    """Box AP50 of a trained detector on the val file, over the novel, base and all classes."""
    from synthscene.evaluation.detection import evaluate_detections, load_ground_truth
    from synthscene.train.data import InstanceDataset
    from synthscene.train.downstream import load_trained, predict_instances

    model, _, class_names = load_trained(run)
    truth = load_ground_truth(val)
    detections = predict_instances(model, InstanceDataset(val, class_names), class_names, truth["categories"])
    return {f"ap50_{group}": max(0.0, evaluate_detections(truth, detections, "bbox", classes=names)["AP50"])
            for group, names in (("novel", NOVEL), ("base", BASE), ("all", BASE + NOVEL))}


def results_table(records: list[dict], profile: str) -> str:
    from synthscene.experiment import settings_table

    by_key = {(r["setting"], r["metric"]): r for r in records}
    lines = [f"# Open-vocabulary experiment ({profile} profile)", "",
             f"Base classes {', '.join(BASE)}; novel classes {', '.join(NOVEL)} (never labelled in the real "
             "data the first two detectors and the teacher see).", "",
             *settings_table(records, SETTINGS, METRICS)]
    upper = by_key.get((SETTINGS[2], "ap50_novel"))
    mixed = by_key.get((SETTINGS[1], "ap50_novel"))
    if upper and mixed and upper["mean"] > 0:
        lines += ["", f"Novel AP50 of real base + synthetic / upper bound: {mixed['mean'] / upper['mean']:.2f} "
                      "(goal >= 0.5)."]
    lines += ["", "Values: box AP50 on the real val split, mean ± std over seeds, in points (x100)."]
    return "\n".join(lines) + "\n"


def plot_results(records: list[dict], path: Path) -> None:
    from synthscene.experiment import plot_settings

    plot_settings(records, path, SETTINGS, METRICS, "box AP50 (x100)")
