"""The dataset card of a run: model, counts, parameters and score histograms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from synthscene.io import write_json, write_text
from synthscene.store import open_run

_BINS = np.linspace(0.0, 1.0, 11)


def dataset_card(run: str | Path) -> dict:
    """Summary statistics of a run's finished shards (JSON-ready)."""
    opened = open_run(run)
    spec = opened.spec
    names = spec.class_names
    instances_per_class = np.zeros(len(names), np.int64)
    images_per_class = np.zeros(len(names), np.int64)
    named_without_instance = 0
    scores, dropped, samples = [], Counter(), 0
    for sample in opened.samples():
        samples += 1
        dropped.update(sample.dropped)
        classes = sample.instances.class_id.tolist()
        instances_per_class += np.bincount(classes, minlength=len(names))
        images_per_class[sorted(set(classes))] += 1
        scores += sample.instances.score.tolist()
        named_without_instance += len(set(sample.class_ids) - set(classes))
    histogram, _ = np.histogram(np.array(scores, np.float64), bins=_BINS)
    resolved = spec.model_dump(mode="json")
    novel = set(spec.grounding.novel_classes) if spec.method == "grounding" else set()
    return {
        "name": spec.name,
        "model": opened.provenance.get("model"),
        "samples": samples,
        "samples_planned": len(opened.manifest_rows()),
        "instances": int(instances_per_class.sum()),
        "per_class": {n: {"instances": int(i), "images": int(m), **({"novel": n in novel} if novel else {})}
                      for n, i, m in zip(names, instances_per_class, images_per_class)},
        "named_classes_without_instance": named_without_instance,
        "components_dropped_as_too_small": int(dropped.get("small", 0)),
        "dropped": {k: int(v) for k, v in sorted(dropped.items())},
        "score_histogram": {"bins": [round(b, 2) for b in _BINS.tolist()], "counts": histogram.tolist()},
        "sampler": resolved["sampler"],
        "method": spec.method,
        "labels": resolved[spec.method],
        "versions": opened.provenance.get("versions"),
        "filter": None if opened.view is None else {k: opened.view[k] for k in (
            "filtered", "where", "samples_where", "samples", "samples_kept", "instances", "instances_kept")},
    }


def write_dataset_card(run: str | Path) -> Path:
    """Write ``dataset_card.json`` and a readable ``dataset_card.md`` into the run folder."""
    run = Path(run)
    card = dataset_card(run)
    write_json(run / "dataset_card.json", card, indent=2)
    lines = [f"# Dataset card: {card['name']}", "",
             f"- model: `{(card['model'] or {}).get('name_or_path')}` "
             f"(UNet hash {(card['model'] or {}).get('unet_sha256_prefix')})",
             f"- samples: {card['samples']} (of {card['samples_planned']} planned), instances: {card['instances']}",
             f"- named classes that got no instance: {card['named_classes_without_instance']}",
             f"- components dropped as too small: {card['components_dropped_as_too_small']}",
             f"- dropped by each label filter: {card['dropped']}",
             f"- sampler: {card['sampler']}", f"- method: {card['method']}, labels: {card['labels']}"]
    if card["filter"]:
        view = card["filter"]
        lines.append(f"- a filtered view of `{view['filtered']}`: instances where `{view['where']}` "
                     f"({view['instances_kept']} of {view['instances']} kept), samples where "
                     f"`{view['samples_where']}` ({view['samples_kept']} of {view['samples']} kept)")
    lines += ["",
             "| class | instances | images |", "|---|---|---|"]
    lines += [f"| {n}{' (novel)' if v.get('novel') else ''} | {v['instances']} | {v['images']} |"
              for n, v in card["per_class"].items()]
    lines += ["", "Instance scores:", "", "| score | count |", "|---|---|"]
    bins, counts = card["score_histogram"]["bins"], card["score_histogram"]["counts"]
    lines += [f"| {lo:.1f}-{hi:.1f} | {c} |" for lo, hi, c in zip(bins[:-1], bins[1:], counts)]
    write_text(run / "dataset_card.md", "\n".join(lines) + "\n")
    return run / "dataset_card.md"
