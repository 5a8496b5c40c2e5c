"""mIoU of the shapes-world colour oracle against the exact labels of real world images.

    .venv/bin/python benchmarks/oracle_accuracy.py [--images 1000] [--seed 0] [--size 32]

Last line: JSON with miou (goal >= 0.95) and per_class IoU (background first), and the
same for the parts of the part-aware classes (``part_miou``, ``per_part``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.world import CLASS_NAMES, PART_NAMES, oracle_parts, oracle_semantic, render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    confusion = np.zeros((len(CLASS_NAMES) + 1,) * 2, np.int64)
    part_confusion = np.zeros((len(PART_NAMES) + 1,) * 2, np.int64)
    for index in range(args.images):
        sample = render_scene(args.seed, index, args.size)
        labels = oracle_semantic(sample.image)
        confusion += confusion_matrix(labels, sample.semantic, len(CLASS_NAMES) + 1)
        part_confusion += confusion_matrix(oracle_parts(sample.image, labels), sample.parts, len(PART_NAMES) + 1)
    miou, per_class = miou_from_confusion(confusion)
    _, per_part = miou_from_confusion(part_confusion)
    names = ["background", *CLASS_NAMES]
    print(json.dumps({"miou": round(miou, 5), "per_class": {n: round(float(v), 5) for n, v in zip(names, per_class)},
                      "part_miou": round(float(np.mean(per_part[1:])), 5),
                      "per_part": {n: round(float(v), 5) for n, v in zip(PART_NAMES, per_part[1:])},
                      "images": args.images, "size": args.size, "seed": args.seed}))


if __name__ == "__main__":
    main()
