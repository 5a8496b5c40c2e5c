"""Append a synthetic COCO / LVIS instances file to a real one (either may be a YOLO
dataset, read as COCO; its images are under its root).

Synthetic images and annotations get ids past the real maxima; categories are matched by
name or synonym (case, spaces and underscores ignored), and unknown ones are an error
unless ``add_categories``. In LVIS files the real categories keep their frequency group
(it defines the rare / common / frequent split that evaluation reports) while their
``image_count`` / ``instance_count`` are recomputed over the merged file.

Image paths (``merge_files``): the two files' images usually live in two folders, and
their ``file_name``s are relative to those. Given both folders (``real_images`` and
``synthetic_images``), the merged file's ``file_name``s are rewritten relative to the
folders' common parent, so one image root, that parent, resolves every image (``synthscene
train --data merged.json --image-root PARENT``; or put the merged file in
``PARENT/annotations/`` and give no root), and images of the same name in the two folders
stay apart. Without both folders the names are kept as they are (train with the roots in
order: ``--image-root REAL --image-root SYNTHETIC``), and a ``file_name`` used by both files
is refused, as it is when both folders are the same.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from synthscene.formats.coco import image_file_name, load_coco_json, safe_relative_path
from synthscene.formats.lvis import update_category_counts
from synthscene.io import OutputExistsError, make_dir, write_json


class MergeError(ValueError):
    """The files cannot be merged as asked; the message says why."""


def _key(name: str) -> str:
    return name.lower().replace("_", " ").strip()


def is_lvis(dataset: dict) -> bool:
    return any("frequency" in c for c in dataset.get("categories", [])) or any(
        "neg_category_ids" in i for i in dataset.get("images", []))


def load_instances(path: str | Path) -> dict:
    dataset = load_coco_json(path)
    for field in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(field), list):
            raise MergeError(f"{path} has no '{field}' list: not a COCO / LVIS instances file")
    return dataset


def _read(path: str | Path, images: str | Path | None) -> tuple[dict, str | Path | None]:
    """A COCO / LVIS file, or a YOLO dataset read as COCO (its images are under its root)."""
    from synthscene.formats.yolo import find_data_yaml, load_yolo

    if Path(path).suffix.lower() in (".yaml", ".yml") or Path(path, "data.yaml").is_file():
        dataset, root = load_yolo(find_data_yaml(path))
        if images is not None and Path(os.path.abspath(images)) != root:
            raise MergeError(f"{path} is a YOLO dataset: its images are under {root}, not {images}")
        return dataset, root
    return load_instances(path), images


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
    root = Path(image_root)
    for image in dataset["images"]:
        file_name = image_file_name(image)
        if file_name is None:
            raise MergeError(f"{name}: image {image.get('id')} has no file_name")
        relative = safe_relative_path(file_name)
        if relative is None:
            raise MergeError(f"{name}: image path {file_name!r} leaves {root}")
        path = root / relative
        if not path.is_file():
            raise MergeError(f"{name}: image {path} is missing")
        try:
            with Image.open(path) as file:
                width, height = file.size
        except OSError as err:
            raise MergeError(f"{name}: image {path} cannot be read as an image: {err}") from None
        if (height, width) != (image["height"], image["width"]):
            raise MergeError(f"{name}: {file_name} is {height}x{width} on disk but "
                             f"{image['height']}x{image['width']} in the file")


def rebase_file_names(dataset: dict, image_root: str | Path, new_root: str | Path) -> dict:
    """A copy of ``dataset`` whose ``file_name``s, relative to ``image_root``, are made
    relative to ``new_root`` (a folder above it; the paths are not resolved, so links stay)."""
    image_root, new_root = Path(os.path.abspath(image_root)), Path(os.path.abspath(new_root))
    prefix = image_root.relative_to(new_root)
    images = []
    for image in dataset["images"]:
        relative = safe_relative_path(image_file_name(image) or "")
        if relative is None:
            raise MergeError(f"image {image_file_name(image)!r} leaves {image_root}")
        images.append({**image, "file_name": (prefix / relative).as_posix()})
    return {**dataset, "images": images}


def check_file_names(real: dict, synthetic: dict, real_name: str, synthetic_name: str) -> None:
    """Refuse a ``file_name`` (normalised) that both files use: the merged file could not
    tell the two images apart."""
    def names(dataset):
        result = set()
        for image in dataset["images"]:
            file_name = image_file_name(image)
            if file_name is not None:
                relative = safe_relative_path(file_name)
                result.add(relative.as_posix() if relative is not None else file_name)
        return result

    shared = sorted(names(real) & names(synthetic))
    if shared:
        more = f" (and {len(shared) - 1} more)" if len(shared) > 1 else ""
        raise MergeError(f"{real_name} and {synthetic_name} both use the file name {shared[0]!r}{more} for "
                         "different images: give --real-images and --synthetic-images (two different folders) so "
                         "the merged file names keep them apart")


def merge_files(real: str | Path, synthetic: str | Path, out: str | Path, add_categories: bool = False,
                real_images: str | Path | None = None, synthetic_images: str | Path | None = None,
                overwrite: bool = False) -> dict:
    """Merge two instances files into ``out`` (written whole, after every check).

    Checks: both are COCO / LVIS instances files; annotations refer to images of their
    file with masks of their image's size; with ``real_images`` / ``synthetic_images``,
    every image exists in its folder (not leaving it) with its entry's size; file names
    keep the images apart (see the module notes: with both folders they are rewritten
    relative to the folders' common parent).

    Returns:
        {"out", "real_images": count, "synthetic_images": count, "image_root": the common
        parent the merged file names are relative to, or None when names were kept}.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists (use --overwrite)")
    real_data, real_images = _read(real, real_images)
    synthetic_data, synthetic_images = _read(synthetic, synthetic_images)
    check_sizes(real_data, str(real), real_images)
    check_sizes(synthetic_data, str(synthetic), synthetic_images)
    root = None
    if real_images is not None and synthetic_images is not None and \
            os.path.abspath(real_images) != os.path.abspath(synthetic_images):
        root = Path(os.path.commonpath([os.path.abspath(real_images), os.path.abspath(synthetic_images)]))
        real_data = rebase_file_names(real_data, real_images, root)
        synthetic_data = rebase_file_names(synthetic_data, synthetic_images, root)
    check_file_names(real_data, synthetic_data, str(real), str(synthetic))
    merged = merge_instances(real_data, synthetic_data, add_categories=add_categories)
    make_dir(out.parent)
    try:
        write_json(out, merged)
    except OSError as err:
        raise PermissionError(f"cannot write {out}: {err.strerror}") from err
    return {"out": out, "real_images": len(real_data["images"]), "synthetic_images": len(synthetic_data["images"]),
            "image_root": root}


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
