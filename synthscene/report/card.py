"""The dataset card of a run: model, counts, parameters and score histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from synthscene.io import write_json
from synthscene.store import read_records

_BINS = np.linspace(0.0, 1.0, 11)


def dataset_card(run: str | Path) -> dict:
    """Summary statistics of a run's finished shards (JSON-ready)."""
    run = Path(run)
    spec = yaml.safe_load((run / "spec.resolved.yaml").read_text())
    names = [c["name"] for c in spec["classes"]]
    provenance = json.loads((run / "run.json").read_text())
    instances_per_class = np.zeros(len(names), np.int64)
    images_per_class = np.zeros(len(names), np.int64)
    named_without_instance = 0
    scores, dropped, samples = [], 0, 0
    for _, record in read_records(run):
        samples += 1
        dropped += record.get("dropped_small", 0)
        present = set()
        for inst in record["instances"]:
            instances_per_class[inst["class_id"]] += 1
            present.add(inst["class_id"])
            scores.append(inst["score"])
        for class_id in present:
            images_per_class[class_id] += 1
        named_without_instance += len(set(record.get("class_ids", [])) - present)
    histogram, _ = np.histogram(np.array(scores, np.float64), bins=_BINS)
    return {
        "name": spec["name"],
        "model": provenance.get("model"),
        "samples": samples,
        "instances": int(instances_per_class.sum()),
        "per_class": {n: {"instances": int(i), "images": int(m)}
                      for n, i, m in zip(names, instances_per_class, images_per_class)},
        "named_classes_without_instance": named_without_instance,
        "components_dropped_as_too_small": dropped,
        "score_histogram": {"bins": [round(b, 2) for b in _BINS.tolist()], "counts": histogram.tolist()},
        "sampler": spec["sampler"],
        "method": spec.get("method", "text2labels"),
        "labels": spec[spec.get("method", "text2labels")],
        "versions": provenance.get("versions"),
    }


def write_dataset_card(run: str | Path) -> Path:
    """Write ``dataset_card.json`` and a readable ``dataset_card.md`` into the run folder."""
    run = Path(run)
    card = dataset_card(run)
    write_json(run / "dataset_card.json", card, indent=2)
    lines = [f"# Dataset card: {card['name']}", "",
             f"- model: `{(card['model'] or {}).get('name_or_path')}` "
             f"(UNet hash {(card['model'] or {}).get('unet_sha256_prefix')})",
             f"- samples: {card['samples']}, instances: {card['instances']}",
             f"- named classes that got no instance: {card['named_classes_without_instance']}",
             f"- components dropped as too small: {card['components_dropped_as_too_small']}",
             f"- sampler: {card['sampler']}", f"- method: {card['method']}, labels: {card['labels']}", "",
             "| class | instances | images |", "|---|---|---|"]
    lines += [f"| {n} | {v['instances']} | {v['images']} |" for n, v in card["per_class"].items()]
    lines += ["", "Instance scores:", "", "| score | count |", "|---|---|"]
    bins, counts = card["score_histogram"]["bins"], card["score_histogram"]["counts"]
    lines += [f"| {lo:.1f}-{hi:.1f} | {c} |" for lo, hi, c in zip(bins[:-1], bins[1:], counts)]
    (run / "dataset_card.md").write_text("\n".join(lines) + "\n")
    return run / "dataset_card.md"
