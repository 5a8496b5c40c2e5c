"""Append a synthetic COCO / LVIS instances file to a real one.

Synthetic images and annotations get ids past the real maxima; categories are matched by
name or synonym (case, spaces and underscores ignored), and unknown ones are an error
unless ``add_categories``. In LVIS files the real categories keep their frequency group
(it defines the rare / common / frequent split that evaluation reports) while their
``image_count`` / ``instance_count`` are recomputed over the merged file.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from synthscene.formats.lvis import update_category_counts


class MergeError(ValueError):
    """The files cannot be merged as asked; the message says why."""


def _key(name: str) -> str:
    return name.lower().replace("_", " ").strip()


def is_lvis(dataset: dict) -> bool:
    return any("frequency" in c for c in dataset.get("categories", [])) or any(
        "neg_category_ids" in i for i in dataset.get("images", []))


def load_instances(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        dataset = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MergeError(f"{path} is not valid JSON: {err}") from None
    for field in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(field), list):
            raise MergeError(f"{path} has no '{field}' list: not a COCO / LVIS instances file")
    return dataset


def check_sizes(dataset: dict, name: str, image_root: str | Path | None = None) -> None:
    """Every annotation's mask matches its image entry's size, and (with ``image_root``)
    every image entry matches the image file on disk."""
    images = {image["id"]: image for image in dataset["images"]}
    for annotation in dataset["annotations"]:
        image = images.get(annotation["image_id"])
        if image is None:
            raise MergeError(f"{name}: annotation {annotation['id']} refers to missing image {annotation['image_id']}")
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, dict) and list(segmentation["size"]) != [image["height"], image["width"]]:
            raise MergeError(f"{name}: annotation {annotation['id']} has a {segmentation['size']} mask but image "
                             f"{image['id']} is {image['height']}x{image['width']}")
    if image_root is None:
        return
    root = Path(image_root).resolve()
    for image in dataset["images"]:
        path = (root / image["file_name"]).resolve()
        if not path.is_relative_to(root):
            raise MergeError(f"{name}: image path {image['file_name']!r} leaves {root}")
        if not path.is_file():
            raise MergeError(f"{name}: image {path} is missing")
        with Image.open(path) as file:
            width, height = file.size
        if (height, width) != (image["height"], image["width"]):
            raise MergeError(f"{name}: {image['file_name']} is {height}x{width} on disk but "
                             f"{image['height']}x{image['width']} in the file")


def merge_instances(real: dict, synthetic: dict, add_categories: bool = False) -> dict:
    """A new dataset: ``real`` followed by ``synthetic`` (neither input is changed)."""
    lvis = is_lvis(real)
    if lvis != is_lvis(synthetic):
        raise MergeError("one file is LVIS and the other is not: export the synthetic run with the real file's format")
    merged = {key: value for key, value in real.items() if key not in ("images", "annotations", "categories")}
    merged["categories"] = [dict(c) for c in real["categories"]]
    by_name = {}
    for category in merged["categories"]:
        for name in (category["name"], *category.get("synonyms", [])):
            by_name.setdefault(_key(name), category["id"])
    category_map, unknown = {}, []
    for category in synthetic["categories"]:
        names = (category["name"], *category.get("synonyms", []))
        match = next((by_name[_key(n)] for n in names if _key(n) in by_name), None)
        if match is None:
            unknown.append(category)
        category_map[category["id"]] = match
    if unknown and not add_categories:
        raise MergeError(f"synthetic categories not in the real file: {', '.join(c['name'] for c in unknown)} "
                         "(pass --add-categories to append them)")
    next_category = max((c["id"] for c in merged["categories"]), default=0) + 1
    for category in unknown:
        category_map[category["id"]] = next_category
        merged["categories"].append({**category, "id": next_category})
        next_category += 1

    image_offset = max((i["id"] for i in real["images"]), default=0)
    annotation_offset = max((a["id"] for a in real["annotations"]), default=0)
    merged["images"] = [dict(i) for i in real["images"]]
    for image in synthetic["images"]:
        image = {**image, "id": image["id"] + image_offset}
        for field in ("neg_category_ids", "not_exhaustive_category_ids"):
            if field in image:
                image[field] = sorted(category_map[c] for c in image[field])
        merged["images"].append(image)
    merged["annotations"] = [dict(a) for a in real["annotations"]]
    for annotation in synthetic["annotations"]:
        merged["annotations"].append({**annotation, "id": annotation["id"] + annotation_offset,
                                      "image_id": annotation["image_id"] + image_offset,
                                      "category_id": category_map[annotation["category_id"]]})
    if lvis:
        update_category_counts(merged, keep_frequency=True)
    return merged
