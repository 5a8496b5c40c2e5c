"""Choose text2labels' labelling parameters: capture once, label many ways, score each against
the shapes-world oracle.

    .venv/bin/python benchmarks/label_tuning.py --seeds 0,1,2 [--images 128] \
        [--spec examples/shapes-text2labels.yaml] \
        --grid '[{}, {"colour_split_distance": 30, "objectness_threshold": 0.3}]'

Each seed's ``--images`` prompts are generated and captured once (the images, attention and
class errors do not depend on the labelling parameters); every grid entry (changes to the
spec's ``text2labels`` section; ``{}`` is the spec as it is) then labels the same captures.
Confusion matrices are pooled over the seeds. Per entry one JSON line: ``miou`` (uncertain
pixels left out, as ``label_quality.py``'s ``miou``) and ``per_class``; with one seed, an
entry's ``miou`` is what ``label_quality.py --seed S`` reports for a spec with those changes.
Choose on some seeds, then report on seeds generated only afterwards.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from synthscene.codecs import IGNORE_INDEX
from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.methods import text2labels
from synthscene.methods.text2labels import capture_batch, label_sample
from synthscene.models.families import family_of
from synthscene.models.info import model_text_layout
from synthscene.models.load import load_pipeline
from synthscene.models.schedulers import set_scheduler
from synthscene.spec import load_spec
from synthscene.world import CLASS_NAMES, oracle_semantic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/shapes-text2labels.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="run seeds, comma-separated")
    parser.add_argument("--images", type=int, default=128, help="per seed")
    parser.add_argument("--grid", default="[{}]", help="JSON list of text2labels changes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    spec = load_spec(args.spec).model_copy(update={"num_samples": args.images})
    if [c.name for c in spec.classes] != list(CLASS_NAMES):
        raise SystemExit("the spec's classes must be the shapes world's, in order, to use the oracle")
    grid = json.loads(args.grid)
    # validated up front: a bad entry fails before minutes of capture, not after
    try:
        labellings = [spec.text2labels.model_validate({**spec.text2labels.model_dump(), **entry}) for entry in grid]
    except ValidationError as err:
        raise SystemExit(f"--grid: {err.errors()[0]['msg']}") from None
    layout = model_text_layout(spec.model)
    for labelling in labellings:
        try:
            layout.reading(labelling.word_encoders)
        except ValueError as err:
            raise SystemExit(f"--grid: {err}") from None
    pipe = load_pipeline(spec.model, device=args.device)
    set_scheduler(pipe, spec.sampler.scheduler)
    n = len(CLASS_NAMES) + 1
    confusion = np.zeros((len(grid), n, n), np.int64)
    for seed in [int(s) for s in args.seeds.split(",")]:
        seeded = spec.model_copy(update={"seed": seed})
        tasks = text2labels.plan(seeded)
        text2labels.check(seeded, tasks)
        for start in tqdm(range(0, len(tasks), seeded.batch_size), desc=f"seed {seed}"):
            batch = tasks[start:start + seeded.batch_size]
            captured = capture_batch(pipe, batch, seeded)
            truths = [oracle_semantic(image) for image in captured.images]
            for k, labelling in enumerate(labellings):
                for b, task in enumerate(batch):
                    semantic = label_sample(family_of(pipe).text_layout(), captured, b, task, labelling, n - 1).semantic
                    confusion[k] += confusion_matrix(semantic, truths[b], n, ignore_index=IGNORE_INDEX)
    for entry, matrix in zip(grid, confusion):
        miou, per_class = miou_from_confusion(matrix)
        print(json.dumps({"seeds": args.seeds, "images": args.images, "changes": entry, "miou": round(miou, 4),
                          "per_class": {c: round(float(v), 4) for c, v in zip(["background", *CLASS_NAMES], per_class)}}))


if __name__ == "__main__":
    main()
