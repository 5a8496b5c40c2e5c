"""Datasets for downstream training: COCO instances and VOC-style semantic folders, mixed.

Sources are opened and checked up front (every image and mask on disk, annotations
present), so training never skips data silently. Classes are matched by name: every
source's classes must belong to the class list of the first source, which numbers them.

- Instances: a COCO JSON (``synthscene export --format coco``: ``DIR/annotations/instances.json``
  with ``DIR/images/``; the shapes world: ``WORLD/annotations/instances_train.json`` with file
  names relative to ``WORLD``). A file name is looked up under the folder above
  ``annotations/``, then under its ``images/``; it may not lead outside that folder.
- Semantic: a VOC export (``JPEGImages/``, ``SegmentationClass/``, ``labels.txt``) or a shapes
  world split (``images/``, ``semantic/``, classes in ``../world.json``). 255 = ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from synthscene.formats.coco import rle_to_mask
from synthscene.formats.voc import IGNORE_INDEX, load_semantic_png


class DatasetError(ValueError):
    """A training source is missing, empty or inconsistent; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """One training source and its sampling weight (``PATH`` or ``PATH:WEIGHT`` on the CLI)."""

    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Source:
        path, separator, weight = text.rpartition(":")
        if separator:
            try:
                value = float(weight)
            except ValueError:
                return cls(text)
            if value <= 0:
                raise DatasetError(f"sampling weight of {path} must be > 0, got {value}")
            return cls(path, value)
        return cls(text)


def class_mapping(names: list[str], reference: list[str], where: str) -> dict[int, int]:
    """1-based ids of ``names`` (order of ``names``) -> 1-based ids in ``reference``."""
    unknown = [n for n in names if n not in reference]
    if unknown:
        raise DatasetError(f"{where} has classes the first source does not: {', '.join(unknown)}")
    return {i + 1: reference.index(n) + 1 for i, n in enumerate(names)}


# ---- instances ------------------------------------------------------------------------


class InstanceDataset(Dataset):
    """(image float [3, H, W] in [0, 1], target dict for torchvision detection models)."""

    def __init__(self, annotation_file: str | Path, reference_classes: list[str] | None = None):
        path = Path(annotation_file)
        if not path.is_file():
            raise DatasetError(f"{path} does not exist")
        data = json.loads(path.read_text())
        root = path.parent.parent
        self.class_names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
        category_index = {c["id"]: i + 1 for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
        mapping = class_mapping(self.class_names, reference_classes or self.class_names, str(path))
        self.label_of = {cid: mapping[index] for cid, index in category_index.items()}
        if not data.get("annotations"):
            raise DatasetError(f"{path} has no annotations: nothing to train a detector on")
        self.images = sorted(data["images"], key=lambda i: i["id"])
        self.annotations: dict[int, list[dict]] = {i["id"]: [] for i in self.images}
        for annotation in data["annotations"]:
            if annotation.get("iscrowd", 0):
                continue
            self.annotations.setdefault(annotation["image_id"], []).append(annotation)
        self.paths = [_image_path(root, i["file_name"], path) for i in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        info = self.images[index]
        image = np.array(Image.open(self.paths[index]).convert("RGB"))
        annotations = self.annotations[info["id"]]
        masks = np.stack([rle_to_mask(a["segmentation"]) for a in annotations]) if annotations else \
            np.zeros((0, *image.shape[:2]), bool)
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in annotations], dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "image_id": info["id"],
        }
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, target


def _image_path(root: Path, file_name: str, annotation_file: Path) -> Path:
    root = root.resolve()
    for candidate in ((root / file_name).resolve(), (root / "images" / file_name).resolve()):
        if not candidate.is_relative_to(root):
            raise DatasetError(f"{annotation_file}: image {file_name!r} lies outside {root}")
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{annotation_file}: image {file_name!r} is missing on disk (looked in {root} and "
                       f"{root / 'images'})")


# ---- semantic -------------------------------------------------------------------------


class SemanticDataset(Dataset):
    """(image float [3, H, W] in [0, 1], mask int64 [H, W]: 0 background, 1..C, 255 ignore)."""

    def __init__(self, folder: str | Path, reference_classes: list[str] | None = None):
        folder = Path(folder)
        if (folder / "SegmentationClass").is_dir():
            images_dir, masks_dir = folder / "JPEGImages", folder / "SegmentationClass"
            labels = folder / "labels.txt"
            if not labels.is_file():
                raise DatasetError(f"{folder} has no labels.txt naming its classes")
            self.class_names = labels.read_text().split()[1:]  # first: background
        elif (folder / "semantic").is_dir():
            images_dir, masks_dir = folder / "images", folder / "semantic"
            world = folder.parent / "world.json"
            if not world.is_file():
                raise DatasetError(f"{folder} has no ../world.json naming its classes")
            self.class_names = [c["name"] for c in json.loads(world.read_text())["classes"]]
        else:
            raise DatasetError(f"{folder} is neither a VOC export (SegmentationClass/) nor a world split (semantic/)")
        mapping = class_mapping(self.class_names, reference_classes or self.class_names, str(folder))
        self.lookup = np.full(256, IGNORE_INDEX, np.int64)
        self.lookup[0] = 0
        for local, unified in mapping.items():
            self.lookup[local] = unified
        self.masks = sorted(masks_dir.glob("*.png"))
        if not self.masks:
            raise DatasetError(f"{masks_dir} holds no masks")
        self.images = [images_dir / m.name for m in self.masks]
        missing = [str(p) for p in self.images if not p.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} image(s) of {folder} are missing, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int):
        image = np.array(Image.open(self.images[index]).convert("RGB"))
        mask = self.lookup[load_semantic_png(self.masks[index])]
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, torch.from_numpy(mask)


# ---- mixing ---------------------------------------------------------------------------


@dataclass
class MixedDataset:
    """Sources concatenated; ``draw`` picks indices so each source is sampled in proportion
    to its weight whatever its size (weight / size per item)."""

    dataset: ConcatDataset
    item_weights: torch.Tensor
    class_names: list[str]

    def draw(self, count: int, generator: torch.Generator) -> list[int]:
        return torch.multinomial(self.item_weights, count, replacement=True, generator=generator).tolist()


def open_sources(task: str, sources: list[Source]) -> MixedDataset:
    """Open and check every source of a ``task`` ("detection" or "semantic")."""
    if not sources:
        raise DatasetError("give at least one training source")
    opener = InstanceDataset if task == "detection" else SemanticDataset
    datasets, reference = [], None
    for source in sources:
        dataset = opener(source.path, reference)
        reference = reference or dataset.class_names
        datasets.append(dataset)
    weights = torch.cat([torch.full((len(d),), s.weight / len(d), dtype=torch.float64)
                         for d, s in zip(datasets, sources)])
    return MixedDataset(ConcatDataset(datasets), weights, list(reference))
