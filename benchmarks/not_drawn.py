"""Labels only for what was drawn: text2labels on prompts that name classes the model cannot draw.

    .venv/bin/python benchmarks/not_drawn.py [--images 96] [--seed S] [--gains 0,0.02,0.05,0.1]
        [--margins=-0.02,0,0.02] [--word-gains 0,0.02] [--context-margins 0,0.02,0.05]
        [--evidence rows.jsonl]

The embedded model knows the six shapes-world classes only. Two prompt sets, planned by
text2labels' own planner from ``--seed``: *known* prompts name world classes only; *unknown*
prompts name at least one class outside the world (giraffe, car, ...: ``UNKNOWN``), alone,
with another unknown one or beside a world class. Each batch is generated once with every
classifier row captured, then labelled with the check off, at each of ``--gains``, and at the
spec's gain with each rival margin of ``--margins`` (``min_rival_margin``: the class's own
word must beat the spec's classes the prompt did not name) and, with ``--word-gains``, at the
spec's gain and margin with each own-word gain (``min_word_gain``: the class's word alone must
beat the empty prompt on its pixels) and, with ``--context-margins``, at the spec's gain with
each in-context margin (``min_context_margin``: the class's word in its caption must beat
every unnamed class's word put in its place). ``--evidence FILE`` writes what the check measured per
sample and named class (gain, rival margin, word gain, oracle pixels) to tune on. Per setting:

- ``unknown_fraction``: unknown-set samples that get an instance of an unknown class
  (goal <= 0.05);
- ``known_miou`` / ``known_ignored``: the known set's semantic mIoU against the oracle
  (255 left out) and the share of its pixels that are 255;
- ``known_missed``: named world classes the oracle finds (>= 10 px) that get no instance
  (on the known set), i.e. what the check costs in recall;
- ``unknown_known_missed``: the same for the world classes named in unknown prompts.

Choose the gain on one seed and report it on another generated afterwards. Last line: JSON.

    .venv/bin/python benchmarks/not_drawn.py --mosaic [--images 24] [--seed S]

does the same for MosaicFusion regions (``examples/shapes-mosaic.yaml``, every region's class
drawn from the world's and ``UNKNOWN``; settings: off, each of ``--gains`` alone, the spec's gain
with each of ``--context-margins``): ``unknown_region_fraction`` (regions of an unknown class
that give an instance) and ``world_region_kept`` (regions of a world class that give one).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from synthscene.codecs import IGNORE_INDEX
from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.methods import text2labels
from synthscene.methods.text2labels import capture_batch, label_sample
from synthscene.models.families import family_of
from synthscene.models.load import load_pipeline
from synthscene.models.schedulers import set_scheduler
from synthscene.spec import ClassSpec, load_spec
from synthscene.world import CLASS_NAMES, oracle_semantic

UNKNOWN = ("giraffe", "car", "dog", "chair", "bottle", "tree", "cup", "person")
MIN_ORACLE_PIXELS = 10  # a class the oracle sees on fewer pixels is not counted as drawn


def prompt_sets(spec, images: int):
    """(known tasks, unknown tasks), ``images`` each; class ids index world + UNKNOWN."""
    known = text2labels.plan(spec.model_copy(update={"num_samples": images}))
    everything = spec.model_copy(update={"classes": (*spec.classes, *(ClassSpec(name=n) for n in UNKNOWN)),
                                         "num_samples": 4 * images})
    unknown = [t for t in text2labels.plan(everything) if max(t.class_ids) >= len(CLASS_NAMES)][:images]
    return known, unknown, everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/shapes-text2labels.yaml")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gains", default="0,0.02,0.05,0.1,0.15")
    parser.add_argument("--margins", default="-0.02,0,0.02",
                        help="rival margins (min_rival_margin), each with the spec's min_class_gain")
    parser.add_argument("--word-gains", default="",
                        help="own-word gains (min_word_gain), each with the spec's gain and rival margin")
    parser.add_argument("--context-margins", default="0,0.02,0.05",
                        help="in-context margins (min_context_margin), each with the spec's gain alone")
    parser.add_argument("--evidence", default=None,
                        help="write what the check measured per sample and named class here (JSON lines)")
    parser.add_argument("--classifier-timesteps", default=None, help="e.g. 850,950 (default: the spec's)")
    parser.add_argument("--classifier-repeats", type=int, default=None, help="default: the spec's")
    parser.add_argument("--mosaic", action="store_true", help="score MosaicFusion regions instead")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.mosaic:
        return mosaic_regions(args)
    started = time.perf_counter()
    spec = load_spec(args.spec).model_copy(update={"seed": args.seed})
    classifier = {}
    if args.classifier_timesteps:
        classifier["classifier_timesteps"] = tuple(int(t) for t in args.classifier_timesteps.split(","))
    if args.classifier_repeats:
        classifier["classifier_repeats"] = args.classifier_repeats
    spec = spec.model_copy(update={"text2labels": spec.text2labels.model_copy(update=classifier)})
    if [c.name for c in spec.classes] != list(CLASS_NAMES):
        raise SystemExit("the spec's classes must be the shapes world's, in order, to use the oracle")
    known, unknown, everything = prompt_sets(spec, args.images)
    text2labels.check(everything, known + unknown)
    pipe = load_pipeline(spec.model, device=args.device)
    set_scheduler(pipe, spec.sampler.scheduler)
    gains = [float(g) for g in args.gains.split(",")]
    margins = [float(m) for m in args.margins.split(",")] if args.margins else []
    # captured once with every row the check can use; each setting only relabels
    capture_params = spec.text2labels.model_copy(update={"min_class_gain": 0.0, "min_rival_margin": 0.0,
                                                         "min_context_margin": 0.0})
    default_gain = spec.text2labels.min_class_gain or 0.05
    word_gains = [float(w) for w in args.word_gains.split(",")] if args.word_gains else []
    contexts = [float(c) for c in args.context_margins.split(",")] if args.context_margins else []
    off = {"min_rival_margin": None, "min_context_margin": None, "min_word_gain": None}

    def setting(**thresholds):
        return spec.text2labels.model_copy(update={**off, "min_class_gain": default_gain, **thresholds})

    settings = {"off": setting(min_class_gain=None),
                **{f"{g:g}": setting(min_class_gain=g) for g in gains},
                **{f"{default_gain:g}+rival {m:g}": setting(min_rival_margin=m) for m in margins},
                **{f"{default_gain:g}+rival 0+word {w:g}": setting(min_rival_margin=0.0, min_word_gain=w)
                   for w in word_gains},
                **{f"{default_gain:g}+context {c:g}": setting(min_context_margin=c) for c in contexts}}
    evidence_rows = []
    n = len(CLASS_NAMES) + 1
    stats = {name: {"confusion": np.zeros((n, n), np.int64), "ignored": 0, "pixels": 0, "unknown_hit": 0,
                    "missed": [0, 0], "unknown_missed": [0, 0]} for name in settings}
    for set_name, tasks in (("known", known), ("unknown", unknown)):
        for start in tqdm(range(0, len(tasks), spec.batch_size), desc=f"{set_name} prompts"):
            batch = tasks[start : start + spec.batch_size]
            # the user's spec names the unknown classes too: they are rivals as much as the world's
            captured = capture_batch(pipe, batch, everything.model_copy(update={"text2labels": capture_params}))
            truths = [oracle_semantic(image) for image in captured.images]
            for name, params in settings.items():
                entry = stats[name]
                for b, task in enumerate(batch):
                    sample = label_sample(family_of(pipe).text_layout(), captured, b, task, params, len(everything.classes))
                    if name == "off":  # evidence is measured before any threshold: one setting holds it all
                        evidence_rows += [{"set": set_name, "index": task.index, "prompt": task.prompt, **row,
                                           "unknown": row["class_id"] >= len(CLASS_NAMES),
                                           "oracle_pixels": int((truths[b] == row["class_id"] + 1).sum()),
                                           "label_pixels": int((sample.semantic == row["class_id"] + 1).sum())}
                                          for row in evidence_of(family_of(pipe).text_layout(), captured, b, task, capture_params,
                                                                 len(everything.classes))]
                    labelled = {int(c) for c in sample.instances.class_id}
                    named_world = [c for c in task.class_ids if c < len(CLASS_NAMES)]
                    seen = [c for c in named_world if (truths[b] == c + 1).sum() >= MIN_ORACLE_PIXELS]
                    key = "missed" if set_name == "known" else "unknown_missed"
                    entry[key][0] += sum(c not in labelled for c in seen)
                    entry[key][1] += len(seen)
                    if set_name == "known":
                        entry["confusion"] += confusion_matrix(sample.semantic, truths[b], n, ignore_index=IGNORE_INDEX)
                        entry["ignored"] += int((sample.semantic == IGNORE_INDEX).sum())
                        entry["pixels"] += truths[b].size
                    else:
                        entry["unknown_hit"] += any(c >= len(CLASS_NAMES) for c in labelled)
    if args.evidence:
        with open(args.evidence, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in evidence_rows)
    result = {"settings": {}}
    for name, entry in stats.items():
        result["settings"][name] = {
            "unknown_fraction": round(entry["unknown_hit"] / len(unknown), 4),
            "known_miou": round(miou_from_confusion(entry["confusion"])[0], 4),
            "known_ignored": round(entry["ignored"] / entry["pixels"], 4),
            "known_missed": round(entry["missed"][0] / max(1, entry["missed"][1]), 4),
            "unknown_known_missed": round(entry["unknown_missed"][0] / max(1, entry["unknown_missed"][1]), 4),
        }
        print(name, result["settings"][name], flush=True)
    result.update(images=args.images, seed=args.seed, classifier_timesteps=spec.text2labels.classifier_timesteps,
                  classifier_repeats=spec.text2labels.classifier_repeats, unknown_classes=list(UNKNOWN), goal_unknown_fraction=0.05,
                  seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


def evidence_of(text_layout, captured, b: int, task, params, num_classes: int) -> list[dict]:
    """The not-drawn check's evidence per named class of sample ``b`` (``extra["class_evidence"]``)."""
    sample = label_sample(text_layout, captured, b, task, params, num_classes)
    return sample.extra.get("class_evidence", [])


def mosaic_regions(args) -> None:
    from synthscene.label.mosaic import region_instances
    from synthscene.methods import mosaic
    from synthscene.methods.mosaic import class_words, generate_and_locate, region_class_errors

    started = time.perf_counter()
    spec = load_spec("examples/shapes-mosaic.yaml")
    classes = (*spec.classes, *(ClassSpec(name=n) for n in UNKNOWN))
    spec = spec.model_copy(update={"seed": args.seed, "num_samples": args.images, "classes": classes})
    tasks = mosaic.plan(spec)
    mosaic.check(spec, tasks)
    pipe = load_pipeline(spec.model, device=args.device)
    set_scheduler(pipe, spec.sampler.scheduler)
    gains = [float(g) for g in args.gains.split(",")]
    contexts = [float(c) for c in args.context_margins.split(",")] if args.context_margins else []
    default_gain = spec.mosaic.min_class_gain or 0.05
    settings = {"off": None, **{f"{g:g}": spec.mosaic.model_copy(update={"min_class_gain": g, "min_context_margin": None})
                                for g in gains},
                **{f"{default_gain:g}+context {c:g}": spec.mosaic.model_copy(
                    update={"min_class_gain": default_gain, "min_context_margin": c}) for c in contexts}}
    counts = {name: {"unknown": [0, 0], "world": [0, 0]} for name in settings}
    for task in tqdm(tasks, desc="mosaic regions"):
        params = spec.mosaic
        result, objectness = generate_and_locate(pipe, task, spec)
        # every row any setting needs, once; each setting only relabels
        errors = region_class_errors(pipe, result.latents, task, params.model_copy(update={"min_context_margin": 0.0}),
                                     class_words(spec))
        for name, setting in settings.items():
            found = region_instances(result.image, objectness, task.layout, params if setting is None else setting,
                                     class_errors=None if setting is None else errors)
            for class_id, instances in zip(task.class_ids, found):
                kind = "unknown" if class_id >= len(CLASS_NAMES) else "world"
                counts[name][kind][0] += bool(instances)
                counts[name][kind][1] += 1
    result = {"settings": {}}
    for name, entry in counts.items():
        result["settings"][name] = {
            "unknown_region_fraction": round(entry["unknown"][0] / max(1, entry["unknown"][1]), 4),
            "world_region_kept": round(entry["world"][0] / max(1, entry["world"][1]), 4),
            "regions": {"unknown": entry["unknown"][1], "world": entry["world"][1]}}
        print(name, result["settings"][name], flush=True)
    result.update(images=args.images, seed=args.seed, unknown_classes=list(UNKNOWN), goal_unknown_fraction=0.05,
                  seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
