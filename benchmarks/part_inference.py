"""Part inference from shape: part mIoU on held-out instances, beside copying the parts of
the most similar support shape.

    .venv/bin/python benchmarks/part_inference.py --model runs/parts --data runs/shapes-world [--split val]

The model is a ``synthscene train-parts`` output trained on the dataset's train split; the
instances scored are those of part-aware classes in ``--split`` (never seen in training).
Each instance's parts are predicted from its visible mask alone, at the instance's own
resolution, and scored inside the mask. Last line: JSON with ``part_miou`` (goal >= 0.8),
``nearest_support_miou`` and the IoU per part.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from synthscene.parts import PartModel, nearest_support_parts
from synthscene.parts.data import cut_instance, iter_part_instances, uncrop_scores


def one_hot_scores(local: np.ndarray, parts: int) -> np.ndarray:
    return np.stack([(local == p).astype(np.float32) for p in range(1, parts + 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a train-parts output folder")
    parser.add_argument("--data", default="runs/shapes-world", help="a part-annotated dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model = PartModel.load(args.model)
    rows = iter_part_instances(args.data, args.split, args.max_images)
    schema = next(rows)
    names = [f"{c}/{p}" for c, p in schema.parts]
    # per global part: [intersection, union] for the model and for the baseline
    counts = {"model": np.zeros((len(names), 2)), "nearest_support": np.zeros((len(names), 2))}
    instances = 0

    def score(kind: str, predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray, class_name: str) -> None:
        for k, global_id in enumerate(schema.global_ids(class_name), 1):
            p, t = (predicted == k) & mask, (truth == k) & mask
            counts[kind][global_id - 1] += ((p & t).sum(), (p | t).sum())

    pending = []

    def flush() -> None:
        crops = [shape for shape, *_ in pending]
        scores = model.predict_crops(crops)
        for (shape, matrix, name, mask, truth), crop_scores in zip(pending, scores):
            height, width = mask.shape
            predicted = uncrop_scores(crop_scores, matrix, height, width).argmax(0) + 1
            score("model", predicted, truth, mask, name)
            parts = len(schema.part_names(name))
            baseline = uncrop_scores(one_hot_scores(nearest_support_parts(model.bank, shape), parts), matrix,
                                     height, width).argmax(0) + 1
            score("nearest_support", baseline, truth, mask, name)
        pending.clear()

    for name, mask, truth in rows:
        shape, matrix = cut_instance(name, mask)
        pending.append((shape, matrix, name, mask, truth))
        instances += 1
        if len(pending) == args.batch_size:
            flush()
    if pending:
        flush()
    result = {"instances": instances, "split": args.split}
    for kind, table in counts.items():
        iou = table[:, 0] / np.maximum(table[:, 1], 1)
        result[f"{kind}_per_part" if kind != "model" else "per_part"] = {n: round(float(v), 4) for n, v in zip(names, iou)}
        result["part_miou" if kind == "model" else f"{kind}_miou"] = round(float(iou.mean()), 4)
    result["goal_part_miou"] = 0.8
    print(json.dumps(result))


if __name__ == "__main__":
    main()
