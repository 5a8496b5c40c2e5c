"""LVIS v1 instances JSON for synthetic images.

LVIS is federated: an image lists the categories verified absent (``neg_category_ids``)
and those present but not labelled exhaustively (``not_exhaustive_category_ids``); a
category records its ``frequency`` group (r: 1-10 training images, c: 11-100, f: > 100),
``image_count`` and ``instance_count``. For a generated image:

- positives are the categories with an annotation;
- ``not_exhaustive_category_ids``: the classes the prompt named that got no annotation
  (the model may have drawn them where the labeller found nothing) and, when the labeller
  dropped components as too small, every named class;
- ``neg_category_ids``: empty by default, since nobody verified an absence. With
  ``negatives="unnamed"`` every class the prompt did not name is declared absent (the
  generator was asked for the named ones only; on the embedded model unnamed classes
  appear in about 3 % of images, see ``benchmarks/embedded_model_quality.py``).
"""

from __future__ import annotations

from collections import Counter

NEGATIVES = ("none", "unnamed")


def frequency_group(image_count: int) -> str:
    """LVIS frequency group from the number of training images of a category."""
    return "r" if image_count <= 10 else "c" if image_count <= 100 else "f"


def lvis_image_fields(named: list[int], annotated: set[int], dropped: int, num_classes: int,
                      negatives: str = "none") -> dict:
    """``neg_category_ids`` and ``not_exhaustive_category_ids`` (1-based) of one image.

    Args:
        named: 0-based class ids the prompt named.
        annotated: 0-based class ids with at least one annotation.
        dropped: components the labeller dropped (too small).
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"unknown negatives rule {negatives!r}; choose one of {', '.join(NEGATIVES)}")
    uncertain = set(named) if dropped else set(named) - annotated
    absent = set(range(num_classes)) - set(named) - annotated if negatives == "unnamed" else set()
    return {"neg_category_ids": sorted(c + 1 for c in absent),
            "not_exhaustive_category_ids": sorted(c + 1 for c in uncertain)}


def update_category_counts(dataset: dict, keep_frequency: bool = True) -> None:
    """Recompute every category's ``image_count`` and ``instance_count`` from the
    annotations; set ``frequency`` from them where it is missing (or always, when
    ``keep_frequency`` is False)."""
    instances = Counter(a["category_id"] for a in dataset["annotations"])
    images = Counter(c for c, _ in {(a["category_id"], a["image_id"]) for a in dataset["annotations"]})
    for category in dataset["categories"]:
        category["image_count"] = images.get(category["id"], 0)
        category["instance_count"] = instances.get(category["id"], 0)
        if not keep_frequency or "frequency" not in category:
            category["frequency"] = frequency_group(category["image_count"])
