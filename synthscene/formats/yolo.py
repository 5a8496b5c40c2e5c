"""YOLO (Ultralytics) detection and segmentation datasets: written from a run, read back.

Layout written by ``write_yolo``::

    data.yaml                  train / val: images/train, nc, names {0: name, ...}
    images/train/0000000.png   the run's stored PNGs, byte for byte
    labels/train/0000000.txt   one line per instance, empty for an image without any

``data.yaml`` has no ``path:`` key, so Ultralytics resolves ``images/train`` relative to
the yaml's own folder and the export can be moved or copied as a whole. There is no
separate validation split: ``val`` names the training images (tools want a ``val``
entry; hold out your own split to measure anything).

A label line is ``class cx cy w h`` (task ``detect``: the box centre and size) or
``class x1 y1 x2 y2 ...`` (task ``segment``: one polygon), class 0-based, coordinates
divided by the image's width / height, 6 decimals. A polygon is the largest external
contour of the instance mask (OpenCV), its vertices pixel indices (the convention of
Ultralytics' own mask converters and of ``cv2.fillPoly``, which is how Ultralytics turns
a polygon back into a mask). Limits of the format, each losing some of a mask:

- one polygon per instance: only the mask's largest part is kept;
- no holes: a ring comes back as a filled disc (``cv2.fillPoly`` of its outer contour);
- no crowd regions: crowd instances (``data["iscrowd"]``) are left out (and counted in a
  warning);
- a mask of one or two pixels (a contour of fewer than 3 points) is written as its box's
  four corners.

Reading (``load_yolo`` / ``read_yolo``): any Ultralytics detection or segmentation
dataset, checked up front; the labels become an in-memory COCO instances dict, which
``synthscene.formats.coco.read_coco`` then opens (with all of its own checks), so a YOLO
dataset is a ``CocoSource`` like any other. Rules (see ``load_yolo``) follow Ultralytics:
the label of ``.../images/.../a.jpg`` is ``.../labels/.../a.txt``, a missing label file
is an image without objects, a line of 5 numbers is a box and an odd count >= 7 a
polygon. Every problem is a ``YoloError`` naming the file (and line). A polygon is
rasterised with ``cv2.fillPoly`` at the image's size, as Ultralytics trains on it, and
kept as an RLE mask (COCO's polygon rasteriser would shave half a pixel off every side,
which erases the small masks of a synthetic run).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from synthscene.codecs import mask_to_rle
from synthscene.formats.coco import CocoSource, new_coco, read_coco
from synthscene.records import masks_to_xyxy

logger = logging.getLogger(__name__)

TASKS = ("detect", "segment")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SLACK = 1e-6  # normalised coordinates a hair outside [0, 1] (rounding by other writers) are accepted


class YoloError(ValueError):
    """A YOLO dataset cannot be read: one line naming the file (and line) and what is wrong."""


# ---- writing --------------------------------------------------------------------------


def write_yolo(items, class_names: list[str], out: Path, task: str = "segment") -> None:
    """Write a YOLO dataset from ``(sample, files)`` pairs of a run (``Run.items()``)
    into the existing empty folder ``out`` (the caller makes it atomic).

    Args:
        items: ``(Sample, SampleFiles)`` pairs; ``files.image`` is copied byte for byte.
        class_names: the run's classes, class_id order.
        out: the folder to write into.
        task: ``"detect"`` (box lines) or ``"segment"`` (polygon lines; needs masks).

    Raises:
        ValueError: an unknown task, a class id outside ``class_names``, or ``segment``
            on a sample whose instances have no masks.
    """
    if task not in TASKS:
        raise ValueError(f"unknown YOLO task {task!r}; choose one of {', '.join(TASKS)}")
    out = Path(out)
    (out / "images" / "train").mkdir(parents=True)
    (out / "labels" / "train").mkdir(parents=True)
    skipped = {"crowd": 0, "empty mask": 0}
    for sample, files in items:
        stem = f"{sample.index:07d}"
        instances = sample.instances
        crowd = instances.data.get("iscrowd")
        if crowd is not None and len(instances):
            crowd = np.asarray(crowd, bool)
            skipped["crowd"] += int(crowd.sum())
            instances = instances[~crowd]
        bad = [int(c) for c in instances.class_id if not 0 <= c < len(class_names)]
        if bad:
            raise ValueError(f"sample {sample.index} has class {bad[0]}, but the run has {len(class_names)} "
                             f"classes (0..{len(class_names) - 1})")
        if task == "segment" and len(instances) and instances.masks is None:
            raise ValueError(f"sample {sample.index} has box-only instances (no masks): a YOLO segmentation "
                             "set needs masks; export it with task 'detect'")
        lines = []
        for k in range(len(instances)):
            if task == "detect":
                values = _box_values(instances.xyxy[k], sample.width, sample.height)
            else:
                values = _polygon_values(instances.masks[k])
                if values is None:
                    skipped["empty mask"] += 1
                    continue
            lines.append(f"{int(instances.class_id[k])} {values}\n")
        shutil.copyfile(files.image, out / "images" / "train" / f"{stem}.png")
        (out / "labels" / "train" / f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
    (out / "data.yaml").write_text(data_yaml_text(class_names), encoding="utf-8")
    for reason, count in skipped.items():
        if count:
            logger.warning("YOLO export: %d %s instance(s) left out (%s)", count, reason,
                           "YOLO has no crowd regions" if reason == "crowd" else "nothing to draw a polygon around")


def data_yaml_text(class_names: list[str]) -> str:
    """The ``data.yaml`` of an export (no ``path:``: folders are relative to the yaml)."""
    body = yaml.safe_dump({"train": "images/train", "val": "images/train", "nc": len(class_names),
                           "names": {k: str(name) for k, name in enumerate(class_names)}},
                          sort_keys=False, allow_unicode=True)
    return ("# YOLO (Ultralytics) dataset written by synthscene.\n"
            "# There is no separate validation split: val names the training images.\n" + body)


def _number(value: float) -> str:
    return f"{value + 0.0:.6f}"  # + 0.0 turns -0.0 into 0.0


def _box_values(xyxy, width: int, height: int) -> str:
    """``cx cy w h`` of a box (clipped to the image, so every value is within [0, 1])."""
    x1, x2 = (min(max(float(v), 0.0), width) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (min(max(float(v), 0.0), height) for v in (xyxy[1], xyxy[3]))
    return " ".join(_number(v) for v in ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                                         (x2 - x1) / width, (y2 - y1) / height))


def _polygon_values(mask: np.ndarray) -> str | None:
    """``x1 y1 x2 y2 ...`` of the mask's largest external contour, or None for an empty mask."""
    height, width = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    # the largest part; among parts of no area (lines of pixels) the one with most corners
    points = max(contours, key=lambda c: (cv2.contourArea(c), len(c))).reshape(-1, 2)
    if len(points) < 3:  # one or two pixels: the box's corners (pixel indices, x2 / y2 exclusive)
        x1, y1, x2, y2 = (int(v) for v in masks_to_xyxy(mask[None])[0])
        points = np.array([(x1, y1), (x2 - 1, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)])
    # Each coordinate is written a hair (0.5e-6 to 1.5e-6 of the size) above index / size:
    # Ultralytics turns a polygon into a mask with an int32 cast (truncation), which would
    # move a vertex one pixel left wherever 6-decimal rounding (or float32) fell below the
    # index; this way truncating and rounding readers both get the exact pixel indices.
    scaled = np.ceil(points / np.array([width, height], np.float64) * 1e6 + 0.5)
    return " ".join(f"{v / 1e6:.6f}" for v in scaled.ravel())


# ---- reading --------------------------------------------------------------------------


def find_data_yaml(path: str | Path) -> Path:
    """``path`` itself when it is a .yaml / .yml file, else ``path/data.yaml``."""
    path = Path(path)
    if not path.exists():
        raise YoloError(f"{path} does not exist")
    if path.is_dir():
        path = path / "data.yaml"
        if not path.is_file():
            raise YoloError(f"{path.parent} has no data.yaml: not a YOLO dataset folder")
        return path
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise YoloError(f"{path} is not a YOLO data.yaml (give the .yaml file or the folder holding data.yaml)")
    return path


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the image path with its last ``images`` folder replaced by
    ``labels`` and its suffix by ``.txt`` (beside the image when there is no such folder)."""
    parts = list(image.parts)
    folders = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if folders:
        parts[folders[-1]] = "labels"
    return Path(*parts).with_suffix(".txt")


class _Dataset:
    """Paths of one dataset: ``root`` (absolute, lexically normalised) for the checks,
    ``shown_root`` (as the caller spelled it) for the messages."""

    def __init__(self, yaml_path: Path, config: dict):
        self.yaml_path = yaml_path
        given = config.get("path")
        if given is not None and not isinstance(given, str):
            raise YoloError(f"{yaml_path}: 'path' is {given!r}, not a folder name")
        # relative to the yaml's folder (Ultralytics tries the working directory, then its
        # datasets folder; the yaml's folder is what keeps a dataset movable)
        self.shown_root = Path(os.path.normpath(yaml_path.parent / given)) if given else yaml_path.parent
        self.root = Path(os.path.abspath(self.shown_root))
        self.real_root = self.root.resolve()
        if not self.root.is_dir():
            raise YoloError(f"{yaml_path}: the dataset folder {self.shown_root} does not exist")

    def absolute(self, base: Path, name: str) -> Path:
        return Path(os.path.normpath(base / name))

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (absolute) lies in the root, also after following symbolic links."""
        return path.is_relative_to(self.root) and path.resolve().is_relative_to(self.real_root)

    def shown(self, path: Path) -> Path:
        return self.shown_root / path.relative_to(self.root) if path.is_relative_to(self.root) else path


def load_yolo(path: str | Path, split: str = "train") -> tuple[dict, Path]:
    """Read a YOLO dataset's split as a COCO instances dict, without writing anything.

    Args:
        path: a data.yaml (or .yml) file, or a folder holding data.yaml.
        split: ``train``, ``val`` or ``test``: the data.yaml entry to read.

    Returns:
        ``(coco, image_root)``: images with ids 1.. in path order, ``file_name`` relative
        to ``image_root`` (the dataset root), ``height`` and ``width`` read from the file;
        categories ids 1..nc in ``names`` order; annotations with ``bbox`` (xywh pixels),
        ``category_id``, ``area``, ``iscrowd`` 0 and, for polygon lines, the polygon's
        mask as an RLE ``segmentation``. Open it with
        ``read_coco(yaml_path, [image_root], dataset=coco)`` (``read_yolo`` does).

    Rules, each broken one a ``YoloError``: the yaml is a mapping with ``names`` (a list,
    or a mapping of ids 0..nc-1) and, if given, an ``nc`` that agrees; no ``kpt_shape``
    (pose sets are not read). The dataset root is ``path:`` (relative to the yaml's folder)
    or else the yaml's folder. The split is a folder of images (searched recursively), a
    .txt list of image paths (relative ones relative to the list's folder) or a list of
    those; images have suffixes .png .jpg .jpeg .bmp .webp, lie inside the root (also after
    following symbolic links) and are sorted by path. A label line holds 5 numbers (a box)
    or an odd count >= 7 (a polygon); its class is an integer in 0..nc-1 and its
    coordinates are finite and within [0, 1].
    """
    if split not in SPLITS:
        raise YoloError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    yaml_path = find_data_yaml(path)
    config = _load_config(yaml_path)
    names = _class_names(config, yaml_path)
    dataset = _Dataset(yaml_path, config)
    images = _split_images(dataset, config, split)
    coco = new_coco(names, f"YOLO dataset {yaml_path} ({split})")
    for image_id, image in enumerate(images, 1):
        width, height = _image_size(dataset, image)
        coco["images"].append({"id": image_id, "file_name": image.relative_to(dataset.root).as_posix(),
                               "height": height, "width": width})
        for annotation in _label_annotations(dataset, image, len(names), height, width):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, **annotation})
    return coco, dataset.root


def read_yolo(path: str | Path, split: str = "train") -> CocoSource:
    """A YOLO dataset's split opened as a ``CocoSource`` (see ``load_yolo``)."""
    coco, root = load_yolo(path, split)
    return read_coco(find_data_yaml(path), [root], dataset=coco)


def _load_config(yaml_path: Path) -> dict:
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise YoloError(f"{yaml_path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(config, dict):
        raise YoloError(f"{yaml_path} is not a YOLO data.yaml (its top level is not a mapping)")
    if "kpt_shape" in config:
        raise YoloError(f"{yaml_path} is a pose (keypoint) dataset (it has kpt_shape): only detection and "
                        "segmentation sets are read")
    return config


def _class_names(config: dict, yaml_path: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, list):
        names = [str(name) for name in names]
    elif isinstance(names, dict):
        ids = [_class_key(key) for key in names]
        if sorted(ids) != list(range(len(ids))):
            raise YoloError(f"{yaml_path}: names has ids {sorted(names, key=str)}, but they must be 0..{len(ids) - 1}"
                            " without gaps")
        names = [str(names[key]) for _, key in sorted(zip(ids, names))]
    elif names is None:
        raise YoloError(f"{yaml_path} has no 'names' (the class names, a list or a mapping id: name)")
    else:
        raise YoloError(f"{yaml_path}: names is a {type(names).__name__}, not a list or a mapping id: name")
    if not names:
        raise YoloError(f"{yaml_path}: names is empty (a dataset needs at least one class)")
    nc = config.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc != len(names)):
        raise YoloError(f"{yaml_path}: nc is {nc!r} but names has {len(names)} classes")
    return names


def _class_key(key) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return -1  # refused by the 0..n-1 check with the ids named


def _split_images(dataset: _Dataset, config: dict, split: str) -> list[Path]:
    entry = config.get(split)
    if entry is None:
        raise YoloError(f"{dataset.yaml_path} has no '{split}' entry (a folder of images, a .txt list or a list "
                        "of those)")
    entries = entry if isinstance(entry, list) else [entry]
    images: set[Path] = set()
    for value in entries:
        if not isinstance(value, str) or not value:
            raise YoloError(f"{dataset.yaml_path}: {split} entry {value!r} is not a folder or file name")
        path = dataset.absolute(dataset.root, value)
        if not dataset.inside(path):
            raise YoloError(f"{dataset.yaml_path}: {split} entry {value!r} lies outside the dataset folder "
                            f"{dataset.shown_root}")
        if path.is_dir():
            for found in path.rglob("*"):
                if found.suffix.lower() in IMAGE_SUFFIXES and found.is_file():
                    if not dataset.inside(found):
                        raise YoloError(f"{dataset.shown(found)} leads outside the dataset folder "
                                        f"{dataset.shown_root} (a symbolic link)")
                    images.add(found)
        elif path.suffix.lower() == ".txt" and path.is_file():
            images.update(_listed_images(dataset, path))
        elif not path.exists():
            raise YoloError(f"{dataset.yaml_path}: {split} entry {value!r} does not exist ({dataset.shown(path)})")
        else:
            raise YoloError(f"{dataset.yaml_path}: {split} entry {value!r} is neither a folder of images nor a "
                            ".txt list of image paths")
    if not images:
        raise YoloError(f"{dataset.yaml_path}: {split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(images)


def _listed_images(dataset: _Dataset, list_file: Path) -> list[Path]:
    """The images a .txt list names, one per line; relative lines are relative to the
    list's folder (Ultralytics' ``./`` lines are, its other relative lines are relative to
    the working directory, which no dataset can rely on)."""
    where = dataset.shown(list_file)
    images = []
    for number, line in enumerate(_read_lines(where, list_file), 1):
        name = line.strip()
        if not name:
            continue
        path = dataset.absolute(list_file.parent, name)
        if not dataset.inside(path):
            raise YoloError(f"{where} line {number}: image {name!r} lies outside the dataset folder "
                            f"{dataset.shown_root} (absolute paths elsewhere, '..' and symbolic links leading out "
                            "are refused)")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise YoloError(f"{where} line {number}: {name!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if not path.is_file():
            raise YoloError(f"{where} line {number}: image {name!r} does not exist")
        images.append(path)
    return images


def _read_lines(where: Path, path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise YoloError(f"{where} is not a UTF-8 text file") from None
    except OSError as err:
        raise YoloError(f"{where} cannot be read: {err.strerror}") from None


def _image_size(dataset: _Dataset, image: Path) -> tuple[int, int]:
    try:
        with Image.open(image) as file:
            return file.size
    except (OSError, ValueError) as err:
        raise YoloError(f"{dataset.shown(image)} cannot be read as an image: {err}") from None


def _label_annotations(dataset: _Dataset, image: Path, nc: int, height: int, width: int) -> list[dict]:
    """The COCO annotations (without ids) of one image's label file."""
    label = label_path(image)
    where = dataset.shown(label)
    if not dataset.inside(label):
        raise YoloError(f"{where}, the label file of {dataset.shown(image)}, lies outside the dataset folder "
                        f"{dataset.shown_root}")
    if not label.exists():
        return []  # an image without objects
    if not label.is_file():
        raise YoloError(f"{where} is not a file (it should be the labels of {dataset.shown(image)})")
    annotations = []
    for number, line in enumerate(_read_lines(where, label), 1):
        tokens = line.split()
        if not tokens:
            continue
        at = f"{where} line {number}"
        if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
            raise YoloError(f"{at}: {len(tokens)} values; a box line has 5 (class cx cy w h), a polygon line an "
                            "odd number >= 7 (class x1 y1 x2 y2 x3 y3 ...)")
        values = []
        for token in tokens:
            try:
                values.append(float(token))
            except ValueError:
                raise YoloError(f"{at}: {token!r} is not a number") from None
        class_id = values[0]
        if not (math.isfinite(class_id) and class_id.is_integer() and 0 <= class_id < nc):
            raise YoloError(f"{at}: class {tokens[0]} is not in data.yaml (names 0..{nc - 1})")
        coords = np.array(values[1:], np.float64)
        outside = coords[~(np.isfinite(coords) & (coords >= -SLACK) & (coords <= 1 + SLACK))]
        if len(outside):
            raise YoloError(f"{at}: coordinate {outside[0]:g} is outside [0, 1] (YOLO coordinates are divided by "
                            "the image's width and height)")
        coords = np.clip(coords, 0.0, 1.0)
        if len(coords) == 4:
            annotations.append(_box_annotation(coords, int(class_id), height, width))
        else:
            annotations.append(_polygon_annotation(coords, int(class_id), height, width))
    return annotations


def _box_annotation(coords: np.ndarray, class_id: int, height: int, width: int) -> dict:
    cx, cy, w, h = coords * (width, height, width, height)
    return {"category_id": class_id + 1, "bbox": [float(cx - w / 2), float(cy - h / 2), float(w), float(h)],
            "area": float(w * h), "iscrowd": 0}


def _polygon_annotation(coords: np.ndarray, class_id: int, height: int, width: int) -> dict:
    """The polygon filled as Ultralytics fills it (``cv2.fillPoly`` of pixel indices; rounded
    here, where Ultralytics truncates, see ``_polygon_values``), its box the mask's."""
    points = np.rint(coords.reshape(-1, 2) * (width, height)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points], 1)
    mask = mask.astype(bool)
    x1, y1, x2, y2 = (float(v) for v in masks_to_xyxy(mask[None])[0])
    # a polygon that fills nothing (all on the right or bottom edge) has a box of no area,
    # which read_coco drops and counts as degenerate
    return {"category_id": class_id + 1, "segmentation": mask_to_rle(mask), "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": int(mask.sum()), "iscrowd": 0}
