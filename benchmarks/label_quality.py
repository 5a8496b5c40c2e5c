"""Label quality of text2labels on the embedded model, scored against the shapes-world oracle.

    .venv/bin/python benchmarks/label_quality.py [--images 100] [--spec examples/shapes-text2labels.yaml]

Each batch is generated and captured once; every recipe labels the same maps. Pixels a
recipe marks uncertain (255) are left out of its confusion matrix; their share is reported.
Last line: JSON with miou_faithful, per_class (faithful), and the variants measured.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from synthscene.methods.text2labels import capture_batch, check_task, label_sample
from synthscene.models.load import load_pipeline
from synthscene.models.schedulers import set_scheduler
from synthscene.plan import plan_dataset
from synthscene.spec import load_spec
from synthscene.world import CLASS_NAMES, oracle_semantic
from synthscene.world.oracle import confusion_matrix, miou_from_confusion

IGNORE = 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/shapes-text2labels.yaml")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = load_spec(args.spec)
    spec = spec.model_copy(update={"num_samples": args.images})
    if [c.name for c in spec.classes] != list(CLASS_NAMES):
        raise SystemExit("the spec's classes must be the shapes world's, in order, to use the oracle")
    pipe = load_pipeline(spec.model)
    set_scheduler(pipe, spec.sampler.scheduler)
    tasks = plan_dataset(spec)
    for task in tasks:
        check_task(pipe.tokenizer, task)
    recipes = {
        "faithful": spec.text2labels,
        "no_self_attention": spec.text2labels.model_copy(update={"self_attention_power": 0}),
    }
    n = len(CLASS_NAMES) + 1
    confusion = {name: np.zeros((n, n), np.int64) for name in recipes}
    ignored = {name: 0 for name in recipes}
    pixels = 0
    for start in tqdm(range(0, len(tasks), spec.batch_size), desc="label quality"):
        batch = tasks[start : start + spec.batch_size]
        captured = capture_batch(pipe, batch, spec)
        for b, task in enumerate(batch):
            truth = oracle_semantic(captured.images[b])
            pixels += truth.size
            for name, params in recipes.items():
                semantic = label_sample(pipe.tokenizer, captured, b, task, params, len(CLASS_NAMES)).semantic
                confusion[name] += confusion_matrix(semantic, truth, n, ignore_index=IGNORE)
                ignored[name] += int((semantic == IGNORE).sum())
    result = {}
    for name in recipes:
        miou, per_class = miou_from_confusion(confusion[name])
        result[f"miou_{name}"] = round(miou, 4)
        result[f"ignored_{name}"] = round(ignored[name] / pixels, 4)
        if name == "faithful":
            result["per_class"] = {c: round(float(v), 4) for c, v in zip(["background", *CLASS_NAMES], per_class)}
    result.update(images=len(tasks), seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
