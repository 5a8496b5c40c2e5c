"""Restyle: are the real labels still valid, and did anything change?

    .venv/bin/python benchmarks/restyle_fidelity.py [--images 40] [--variants 1] [--seed 0]

The shapes world's val images (``--images`` of them, world seed ``--world-seed``), written
in the Cityscapes layout, are restyled with the embedded model (``method: restyle``, the
largest 3 instances of each image, the class template prompt, ``--start`` of the schedule
skipped) by the run engine, as ``synthscene generate --spec`` does. Per sample:

- ``outside_identical``: the fraction of samples whose pixels outside the restyled masks
  equal the source's, byte for byte (goal 1.0);
- ``label_miou``: the world's oracle run on the restyled images against the labels they
  kept (the source's), mIoU over background + 6 classes (goal >= 0.9);
- ``inside_change``: mean absolute pixel change (0-255) inside the restyled masks, beside
  ``source_inside_variation``, the source's own mean absolute deviation from each
  instance's mean colour inside the same masks (the scale of a visible change);

and the same for the restyle-free copy (the source images as they are) as the baseline.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from synthscene.engine.run import run_spec
from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.formats.cityscapes import CityscapesSource
from synthscene.methods import restyle
from synthscene.spec import validate_spec
from synthscene.store import open_run
from synthscene.world import CLASS_NAMES, oracle_semantic
from synthscene.world.build import write_world


def scores(pairs) -> dict:
    """pairs: (image, source sample, restyled instance positions)."""
    n = len(CLASS_NAMES) + 1
    confusion = np.zeros((n, n), np.int64)
    identical, change, variation, inside_pixels = 0, 0.0, 0.0, 0
    for image, source, chosen in pairs:
        inside = source.instances.masks[chosen].any(axis=0)
        identical += bool(np.array_equal(image[~inside], source.image[~inside]))
        confusion += confusion_matrix(oracle_semantic(image), source.semantic, n, ignore_index=255)
        change += float(np.abs(image[inside].astype(np.int16) - source.image[inside]).sum())
        for position in chosen:
            pixels = source.image[source.instances.masks[position]].astype(np.float64)
            variation += float(np.abs(pixels - pixels.mean(axis=0)).sum())
        inside_pixels += int(inside.sum()) * 3
    return {"outside_identical": round(identical / len(pairs), 4),
            "label_miou": round(miou_from_confusion(confusion)[0], 4),
            "inside_change": round(change / max(1, inside_pixels), 2),
            "source_inside_variation": round(variation / max(1, inside_pixels), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--start", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(Path(tmp) / "world", n_train=0, n_val=args.images, seed=args.world_seed,
                            progress=False, cityscapes=True)
        source = CityscapesSource(world / "cityscapes", "val")
        data = {"method": "restyle", "name": "restyle-fidelity", "model": "embedded", "seed": args.seed,
                "shard_size": 8, "classes": [{"name": n} for n in CLASS_NAMES],
                "restyle": {"source": {"format": "cityscapes", "path": str(world / "cityscapes"), "split": "val"},
                            "variants_per_instance": args.variants, "start": args.start}}
        params = validate_spec({**data, "num_samples": 1}).restyle
        usable = sum(bool(restyle.chosen_instances(source.instances(i), params)) for i in range(len(source)))
        spec = validate_spec({**data, "num_samples": usable * args.variants})
        run_spec(spec, Path(tmp) / "run")
        restyled, copies = [], []
        for sample in open_run(Path(tmp) / "run").samples():
            original = source.sample(sample.extra["source"]["index"])
            restyled.append((sample.image, original, sample.extra["restyled_instances"]))
            copies.append((original.image, original, sample.extra["restyled_instances"]))
        result = {"restyled": scores(restyled), "copy": scores(copies), "samples": len(restyled),
                  "images": args.images, "variants": args.variants, "start": args.start, "seed": args.seed,
                  "goal_outside_identical": 1.0, "goal_label_miou": 0.9,
                  "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
