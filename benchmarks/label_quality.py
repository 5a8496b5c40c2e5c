"""Label quality of text2labels on the embedded model, scored against the shapes-world oracle.

    .venv/bin/python benchmarks/label_quality.py [--images 100] [--seed S] [--spec examples/shapes-text2labels.yaml]

Both recipes label the same images: each batch is generated once per recipe from the same
seeds (capture does not change the images). Pixels a recipe marks uncertain (255) are left
out of its confusion matrix; their share is reported (``ignored*``). Last line: JSON with
``miou`` (ours), ``miou_decided`` (ours with every pixel decided: no uncertain edge band, so
what the band adds is visible), ``miou_faithful`` (Dataset Diffusion), and ``per_class*``.

    .venv/bin/python benchmarks/label_quality.py --mosaic [--images 50] [--seed S] [--spec examples/shapes-mosaic.yaml]

scores MosaicFusion's instance masks instead: for every region that gives instances, the IoU
of their union with the oracle's pixels of its class in the part of the canvas the region owns;
``mask_miou`` (their mean) and ``kept_fraction`` (regions kept / regions) for the default mode,
``mask_miou_strict`` / ``kept_fraction_strict`` for MosaicFusion's rule (every region exactly one
instance, or the image is dropped); ``*_unchecked``: the default mode without the not-drawn check
(``min_class_gain``), on the same images.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from synthscene.codecs import IGNORE_INDEX
from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.label.mosaic import region_instances
from synthscene.methods import mosaic, text2labels
from synthscene.methods.mosaic import class_words, generate_and_locate, region_class_errors
from synthscene.methods.text2labels import capture_batch, label_sample
from synthscene.models.families import family_of
from synthscene.models.load import load_pipeline
from synthscene.models.schedulers import set_scheduler
from synthscene.spec import Text2LabelsSpec, load_spec
from synthscene.world import CLASS_NAMES, oracle_semantic

DEFAULT_SPEC = "examples/shapes-text2labels.yaml"


def _region_iou(instances, truth, owners, k, task) -> float:
    """IoU of a region's instances with the oracle's pixels of its class that it owns."""
    mask = np.any([i.mask for i in instances], axis=0)
    target = (truth == task.class_ids[k] + 1) & (owners == k)
    return (mask & target).sum() / max(1, (mask | target).sum())


def mosaic_quality(spec_path: str, images: int, device: str = "cpu", seed: int | None = None) -> None:
    started = time.perf_counter()
    spec = load_spec(spec_path).model_copy(update={"num_samples": images})
    if seed is not None:
        spec = spec.model_copy(update={"seed": seed})
    pipe = load_pipeline(spec.model, device=device)
    set_scheduler(pipe, spec.sampler.scheduler)
    params = spec.mosaic.model_copy(update={"strict": False})
    strict_params = spec.mosaic.model_copy(update={"strict": True})
    ious, unchecked_ious, strict_ious, regions, strict_kept = [], [], [], 0, 0
    for task in tqdm(mosaic.plan(spec), desc="mosaic label quality"):
        layout = task.layout  # planned from the sample's layout stream
        result, objectness = generate_and_locate(pipe, task, spec)
        errors = (region_class_errors(pipe, result.latents, task, params, class_words(spec))
                  if params.min_class_gain is not None else None)
        found = region_instances(result.image, objectness, layout, params, class_errors=errors)
        truth, owners = oracle_semantic(result.image), layout.owners()
        ious += [_region_iou(instances, truth, owners, k, task) for k, instances in enumerate(found) if instances]
        regions += len(found)
        unchecked = region_instances(result.image, objectness, layout, params)
        unchecked_ious += [_region_iou(instances, truth, owners, k, task) for k, instances in enumerate(unchecked)
                           if instances]
        strict = region_instances(result.image, objectness, layout, strict_params, class_errors=errors)
        if all(strict):
            strict_ious += [_region_iou(instances, truth, owners, k, task) for k, instances in enumerate(strict)]
            strict_kept += len(strict)
    result = {"mask_miou": round(float(np.mean(ious)), 4) if ious else 0.0,
              "kept_fraction": round(len(ious) / regions, 4),
              "mask_miou_strict": round(float(np.mean(strict_ious)), 4) if strict_ious else 0.0,
              "kept_fraction_strict": round(strict_kept / regions, 4),
              "mask_miou_unchecked": round(float(np.mean(unchecked_ious)), 4) if unchecked_ious else 0.0,
              "kept_fraction_unchecked": round(len(unchecked_ious) / regions, 4),
              "images": images, "seed": spec.seed, "regions": regions, "goal": "mask_miou >= 0.8 with kept_fraction >= 0.8",
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=DEFAULT_SPEC)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="the run seed (default: the spec's)")
    parser.add_argument("--mosaic", action="store_true", help="score MosaicFusion's instance masks")
    parser.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda")
    args = parser.parse_args()
    if args.mosaic:
        return mosaic_quality(args.spec if args.spec != DEFAULT_SPEC else "examples/shapes-mosaic.yaml", args.images,
                              args.device, args.seed)
    started = time.perf_counter()
    spec = load_spec(args.spec).model_copy(update={"num_samples": args.images})
    if args.seed is not None:
        spec = spec.model_copy(update={"seed": args.seed})
    if [c.name for c in spec.classes] != list(CLASS_NAMES):
        raise SystemExit("the spec's classes must be the shapes world's, in order, to use the oracle")
    pipe = load_pipeline(spec.model, device=args.device)
    set_scheduler(pipe, spec.sampler.scheduler)
    tasks = text2labels.plan(spec)
    text2labels.check(spec, tasks)
    params = spec.text2labels
    # the spec's own parameters for its recipe, the defaults for the other but what the model
    # decides (its grids, its object tokens and encoders); "ours_decided" is ours with every pixel decided
    # (no uncertain edge band), labelled from the same capture
    model_fields = {f: getattr(params, f) for f in ("cross_resolutions", "self_resolution", "objectness_tokens",
                                                    "word_encoders")}
    recipes = {name: params if params.recipe == name else Text2LabelsSpec(recipe=name, **model_fields)
               for name in ("ours", "faithful")}
    variants = {"ours": {"ours": recipes["ours"],
                         "ours_decided": recipes["ours"].model_copy(update={"uncertain_blend": None})},
                "faithful": {"faithful": recipes["faithful"]}}
    names = [name for group in variants.values() for name in group]
    n = len(CLASS_NAMES) + 1
    confusion = {name: np.zeros((n, n), np.int64) for name in names}
    ignored = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(recipes, 0.0)
    pixels = 0
    for start in tqdm(range(0, len(tasks), spec.batch_size), desc="label quality"):
        batch = tasks[start : start + spec.batch_size]
        for recipe_name, recipe in recipes.items():
            tick = time.perf_counter()
            captured = capture_batch(pipe, batch, spec.model_copy(update={"text2labels": recipe}))
            for name, labelling in variants[recipe_name].items():
                semantics = [label_sample(family_of(pipe).text_layout(), captured, b, task, labelling, n - 1).semantic
                             for b, task in enumerate(batch)]
                for image, semantic in zip(captured.images, semantics):
                    truth = oracle_semantic(image)
                    confusion[name] += confusion_matrix(semantic, truth, n, ignore_index=IGNORE_INDEX)
                    ignored[name] += int((semantic == IGNORE_INDEX).sum())
                    pixels += truth.size if name == "ours" else 0
            seconds[recipe_name] += time.perf_counter() - tick
    result = {}
    for name in names:
        miou, per_class = miou_from_confusion(confusion[name])
        suffix = {"ours": "", "ours_decided": "_decided"}.get(name, f"_{name}")
        result[f"miou{suffix}"] = round(miou, 4)
        result[f"per_class{suffix}"] = {c: round(float(v), 4) for c, v in zip(["background", *CLASS_NAMES], per_class)}
        result[f"ignored{suffix}"] = round(ignored[name] / pixels, 4)
    for name in recipes:
        result[f"seconds{'' if name == 'ours' else '_' + name}"] = round(seconds[name], 1)
    result.update(images=len(tasks), seed=spec.seed, goal_miou=0.85, seconds_total=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
