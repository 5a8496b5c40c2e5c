"""Datasets for downstream training: COCO instances and VOC-style semantic folders, mixed.

Sources are opened and checked up front (every image and mask on disk, annotations
present), so training never skips data silently. Classes are matched by name: every
source's classes must belong to the class list of the first source, which numbers them.

- Instances: a YOLO dataset (``data.yaml`` or its folder; ``synthscene.formats.yolo``, read
  into the COCO form below), or any COCO instances JSON, read by ``synthscene.formats.coco.read_coco``
  (``synthscene export --format coco``: ``DIR/annotations/instances.json`` with
  ``DIR/images/``; the shapes world: ``WORLD/annotations/instances_train.json`` with file
  names relative to ``WORLD``; COCO 2017: ``annotations/instances_train2017.json`` with
  ``train2017/``). Without image roots a file name is looked up under the folder above
  ``annotations/``, its ``images/``, ``SPLIT/`` for ``instances_SPLIT.json``, then
  ``annotations/`` itself; with them (``Source.image_roots``, ``--image-root``) under those,
  in order. It may not lead outside its folder. Crowd annotations and degenerate boxes
  are left out of the targets and counted (``MixedDataset.reports``).
- Semantic: a VOC folder as VOC ships it (``JPEGImages/``, ``SegmentationClass/``, the
  ``ImageSets/Segmentation/train.txt`` list for training, ``val.txt`` for evaluation, or a
  list file named directly; ``labels.txt`` or VOC's 20 classes), or a shapes world split
  (``images/``, ``semantic/``, classes in ``../world.json``). 255 = ignore.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from tqdm import tqdm

from synthscene.codecs import IGNORE_INDEX, UndecodableImageError, check_image_decodes, load_semantic_png
from synthscene.formats.coco import CocoError, box_masks, keep_categories, load_coco_json, read_coco
from synthscene.formats.voc import VocError, voc_class_names, voc_pairs
from synthscene.formats.yolo import YoloError


class DatasetError(ValueError):
    """A training source is missing, empty or inconsistent; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """One training source and its sampling weight (``PATH`` or ``PATH:WEIGHT`` on the CLI);
    for a COCO source, the folders its image paths are looked up in, in order (empty: the
    reader's defaults, ``synthscene.formats.coco.default_image_roots``)."""

    path: str
    weight: float = 1.0
    image_roots: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, image_roots: tuple[str, ...] = ()) -> Source:
        path, separator, weight = text.rpartition(":")
        if separator:
            try:
                value = float(weight)
            except ValueError:
                return cls(text, image_roots=tuple(image_roots))
            if value <= 0:
                raise DatasetError(f"sampling weight of {path} must be > 0, got {value}")
            return cls(path, value, tuple(image_roots))
        return cls(text, image_roots=tuple(image_roots))


def assign_image_roots(num_sources: int, roots: list[str] | None) -> list[tuple[str, ...]]:
    """The image roots of each of ``num_sources`` sources from the CLI's ``--image-root``s.

    One source: every root is its root, tried in order. Several: none at all, or exactly
    one value per source in order; a value may join several folders with ``os.pathsep``
    (``:``), tried in order, and an empty value keeps that source's defaults.
    """
    roots = list(roots or [])
    if not roots:
        return [()] * num_sources
    split = [tuple(part for part in value.split(os.pathsep) if part) for value in roots]
    if num_sources == 1:
        return [tuple(root for parts in split for root in parts)]
    if len(roots) != num_sources:
        raise DatasetError(f"give one --image-root per --data source ({num_sources}), or none; got {len(roots)} "
                           f"(join several folders of one source with '{os.pathsep}')")
    return split


def class_mapping(names: list[str], reference: list[str], where: str) -> dict[int, int]:
    """1-based ids of ``names`` (order of ``names``) -> 1-based ids in ``reference``."""
    unknown = [n for n in names if n not in reference]
    if unknown:
        raise DatasetError(f"{where} has classes the first source does not: {', '.join(unknown)}")
    return {i + 1: reference.index(n) + 1 for i, n in enumerate(names)}


# ---- instances ------------------------------------------------------------------------


def is_yolo(path: str | Path) -> bool:
    """A YOLO dataset: its data.yaml, or a folder holding one."""
    path = Path(path)
    return path.suffix.lower() in (".yaml", ".yml") or (path / "data.yaml").is_file()


def load_instances_file(path: str | Path, split: str = "train") -> tuple[dict, Path, Path | None]:
    """(COCO dict, the file to name in messages, image root or None for COCO's defaults) of
    a COCO / LVIS instances JSON or a YOLO dataset (read into a COCO dict; ``split`` of it)."""
    path = Path(path)
    if is_yolo(path):
        from synthscene.formats.yolo import find_data_yaml, load_yolo

        dataset, root = load_yolo(path, split)
        return dataset, find_data_yaml(path), root
    return load_coco_json(path), path, None


class InstanceDataset(Dataset):
    """(image float [3, H, W] in [0, 1], target dict for torchvision detection models).

    Read through ``synthscene.formats.coco.read_coco`` (polygons, crowd and compressed RLE,
    box-only files, gapped category ids; image paths and sizes checked up front).
    Targets leave out crowd annotations and the boxes the reader dropped as degenerate
    (both counted in ``report()``). ``masks`` is in the target when the file has masks;
    box-only annotations among masked ones get their filled box as the mask.
    """

    def __init__(self, annotation_file: str | Path, reference_classes: list[str] | None = None,
                 image_roots=None, only_classes: list[str] | None = None, split: str = "train"):
        path = Path(annotation_file)
        try:
            dataset, path, yolo_root = load_instances_file(path, split)
            if yolo_root is not None:
                image_roots = [yolo_root]
            if only_classes:  # e.g. the base classes: the other objects stay in the images, unlabelled
                dataset = keep_categories(dataset, only_classes)
            if isinstance(dataset.get("annotations"), list) and not dataset["annotations"]:
                raise DatasetError(f"{path} has no annotations: nothing to train a detector on")
            self.source = read_coco(path, image_roots or None, dataset=dataset)
        except (CocoError, YoloError) as err:
            raise DatasetError(str(err)) from None
        self.class_names = list(self.source.class_names)
        mapping = class_mapping(self.class_names, reference_classes or self.class_names, str(path))
        self.label_of = np.array([mapping[k + 1] for k in range(len(self.class_names))], np.int64)
        self.images = self.source.images
        self.paths = self.source.paths
        self.has_masks = self.source.has_masks

    def __len__(self) -> int:
        return len(self.images)

    def files(self) -> list[Path]:
        return [p for p in self.paths if p is not None]

    def report(self) -> dict:
        """What the source holds and what training leaves out (JSON-ready)."""
        report = self.source.report()
        report["crowd_ignored"] = report["crowd"]
        return report

    def __getitem__(self, index: int):
        image = self.source.load_image(index)
        instances = self.source.instances(index)
        instances = instances[~instances.data["iscrowd"]]
        target = {
            "boxes": torch.from_numpy(instances.xyxy.astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(self.label_of[instances.class_id]),
            "image_id": self.images[index]["id"],
        }
        if self.has_masks:
            masks = instances.masks if instances.masks is not None else box_masks(instances.xyxy, *image.shape[:2])
            target["masks"] = torch.from_numpy(masks.astype(np.uint8))
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, target


# ---- semantic -------------------------------------------------------------------------


class SemanticDataset(Dataset):
    """(image float [3, H, W] in [0, 1], mask int64 [H, W]: 0 background, 1..C, 255 ignore).

    ``folder``: a VOC folder (its ``split`` list from ``ImageSets/Segmentation/``, see
    ``synthscene.formats.voc``), a VOC split list file, or a world split (``images/``,
    ``semantic/``, classes in ``../world.json``)."""

    def __init__(self, folder: str | Path, reference_classes: list[str] | None = None, split: str = "train"):
        folder = self.folder = Path(folder)
        voc_root = folder.parents[2] if folder.suffix == ".txt" and len(folder.parents) > 2 else folder
        try:
            if (voc_root / "SegmentationClass").is_dir():
                self.class_names = voc_class_names(voc_root)
                pairs = voc_pairs(folder, split)
            elif (folder / "semantic").is_dir():
                world = folder.parent / "world.json"
                if not world.is_file():
                    raise DatasetError(f"{folder} has no ../world.json naming its classes")
                self.class_names = [c["name"] for c in json.loads(world.read_text())["classes"]]
                masks = sorted((folder / "semantic").glob("*.png"))
                if not masks:
                    raise DatasetError(f"{folder / 'semantic'} holds no masks")
                pairs = [(folder / "images" / m.name, m) for m in masks]
            else:
                raise DatasetError(f"{folder} is neither a VOC folder (SegmentationClass/) nor a world split "
                                   "(semantic/)")
        except VocError as err:
            raise DatasetError(str(err)) from None
        mapping = class_mapping(self.class_names, reference_classes or self.class_names, str(folder))
        self.lookup = np.full(256, IGNORE_INDEX, np.int64)
        self.lookup[0] = 0
        for local, unified in mapping.items():
            self.lookup[local] = unified
        self.images = [image for image, _ in pairs]
        self.masks = [mask for _, mask in pairs]
        missing = [str(p) for p in self.images if not p.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} image(s) of {folder} are missing, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.masks)

    def files(self) -> list[Path]:
        return [*self.images, *self.masks]

    def report(self) -> dict:
        return {"source": str(self.folder), "images": len(self.masks)}

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
    reports: list[dict] = field(default_factory=list)  # per source: what it holds, what was left out

    def draw(self, count: int, generator: torch.Generator) -> list[int]:
        return torch.multinomial(self.item_weights, count, replacement=True, generator=generator).tolist()


def open_sources(task: str, sources: list[Source], only_classes: list[str] | None = None,
                 progress: bool = False) -> MixedDataset:
    """Open and check every source of a ``task`` ("detection" or "semantic"): every image
    and mask is decoded once here, so a bad file is named before step 0. Detection sources
    keep only the annotations of ``only_classes`` when given."""
    if not sources:
        raise DatasetError("give at least one training source")
    opener = InstanceDataset if task == "detection" else SemanticDataset
    datasets, reference = [], None
    for source in sources:
        if task == "detection":
            dataset = opener(source.path, reference, list(source.image_roots), only_classes)
        elif source.image_roots:
            raise DatasetError(f"{source.path}: image roots apply to COCO (detection) sources only")
        else:
            dataset = opener(source.path, reference)
        reference = reference or dataset.class_names
        datasets.append(dataset)
    _check_files_decode(datasets, progress)
    weights = torch.cat([torch.full((len(d),), s.weight / len(d), dtype=torch.float64)
                         for d, s in zip(datasets, sources)])
    return MixedDataset(ConcatDataset(datasets), weights, list(reference), [d.report() for d in datasets])


def _check_files_decode(datasets: list, progress: bool) -> None:
    paths = [p for d in datasets for p in d.files()]
    for path in tqdm(paths, desc="checking training data", disable=not progress or not paths, leave=False):
        try:
            check_image_decodes(path)
        except UndecodableImageError as err:
            raise DatasetError(str(err)) from None
