"""COCO instances JSON: writing ``Sample``s (RLE masks) and reading any COCO file back.

Writing: ``new_coco`` + ``instances_to_annotations`` (class_id 0 -> category 1, boxes
xywh, masks as compressed RLE, box-only instances without ``segmentation``).

Reading: ``read_coco(annotation_file, image_roots)`` opens any COCO (or LVIS) instances
file, checks it and its images up front and returns a ``CocoSource`` (``len``, indexing
and iteration give ``Sample``s; ``instances(i)`` decodes labels without reading the
image); ``from_coco`` iterates the samples. Polygons, uncompressed (crowd) and compressed
RLE are decoded; see ``CocoSource`` for the rules. Every problem is a ``CocoError``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from synthscene.codecs import json_value, mask_to_rle, segmentation_to_mask
from synthscene.records import Instances, Sample


def coco_categories(class_names: list[str] | tuple[str, ...]) -> list[dict]:
    """COCO categories, ids 1..C in class order (class_id 0 -> category 1)."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(class_names)]


def coco_annotation(annotation_id: int, image_id: int, class_id: int, xyxy, rle: dict | None, area: int,
                    score: float, iscrowd: bool = False, attributes: dict | None = None) -> dict:
    """One COCO annotation: 1-based ``category_id``, ``bbox`` xywh; a box-only instance has
    no ``segmentation``; ``attributes`` (when given) holds further per-instance values."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    annotation = {"id": annotation_id, "image_id": image_id, "category_id": int(class_id) + 1}
    if rle is not None:
        annotation["segmentation"] = rle
    annotation.update({"area": int(area), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(bool(iscrowd)),
                       "score": float(score)})
    if attributes:
        annotation["attributes"] = attributes
    return annotation


def instances_to_annotations(instances: Instances, image_id: int, first_annotation_id: int) -> list[dict]:
    """COCO annotations of one image; ``area`` is the mask's pixel count (the box's area
    for box-only instances). ``data["iscrowd"]`` becomes ``iscrowd``; every other ``data``
    value (the labeller's check scores, source ids) goes in the annotation's ``attributes``
    (NaN, a score that was not computed, as null)."""
    areas = instances.area
    crowd = instances.data.get("iscrowd", np.zeros(len(instances), bool))
    names = [name for name in instances.data if name != "iscrowd"]
    return [
        coco_annotation(first_annotation_id + k, image_id, instances.class_id[k], instances.xyxy[k],
                        None if instances.masks is None else mask_to_rle(instances.masks[k]), areas[k],
                        instances.score[k], bool(crowd[k]),
                        {name: json_value(instances.data[name][k]) for name in names})
        for k in range(len(instances))
    ]


def new_coco(class_names, description: str) -> dict:
    return {
        "info": {"description": description},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": coco_categories(class_names),
    }


# ---- reading --------------------------------------------------------------------------


class CocoError(ValueError):
    """A COCO file cannot be read: the message names the file and what is wrong."""


def default_image_roots(annotation_file: str | Path) -> list[Path]:
    """Where ``read_coco`` looks for images when given no roots, in order.

    For ``BASE/annotations/NAME.json``: ``BASE``, ``BASE/images``, ``BASE/SPLIT`` when the
    name is ``instances_SPLIT`` (COCO 2017: ``train2017/``), then ``BASE/annotations``.
    For a JSON elsewhere: its own folder, then its ``images/``.
    """
    path = Path(annotation_file)
    folder = path.parent
    if folder.name != "annotations":
        return [folder, folder / "images"]
    base = folder.parent
    roots = [base, base / "images"]
    if path.stem.startswith("instances_") and path.stem != "instances_":
        roots.append(base / path.stem.removeprefix("instances_"))
    return [*roots, folder]


def image_file_name(image: dict) -> str | None:
    """An image entry's path below its root: ``file_name``, or for LVIS entries (which
    have only ``coco_url``) the URL's last two parts, e.g. ``train2017/000000391895.jpg``."""
    if isinstance(image.get("file_name"), str):
        return image["file_name"]
    url = image.get("coco_url")
    if isinstance(url, str) and url.count("/") >= 1:
        return "/".join(url.rstrip("/").split("/")[-2:])
    return None


def safe_relative_path(file_name: str) -> PurePosixPath | None:
    """``file_name`` normalised as a relative path that stays inside its root, or None
    when it is absolute or its ``..`` parts climb out. The check is on the text, so a
    symbolic link inside a root (``train2017 -> /data/coco/train2017``) is followed."""
    if not file_name or file_name.startswith("/"):
        return None
    parts: list[str] = []
    for part in file_name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else None


def has_segmentation(annotation: dict) -> bool:
    """Whether an annotation carries a mask (a non-empty polygon list or an RLE)."""
    return bool(annotation.get("segmentation"))


def box_masks(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [N, H, W]: each box filled (edges rounded outwards, clamped to the image)."""
    masks = np.zeros((len(xyxy), height, width), bool)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, np.float64).reshape(-1, 4)):
        left, top = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
        right, bottom = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
        masks[k, top:bottom, left:right] = True
    return masks


class CocoSource:
    """A COCO (or LVIS) instances file, opened and checked up front.

    Checked when opened (each failure is a ``CocoError`` naming the file): the file is a
    COCO instances file; image and category ids are unique; every annotation refers to an
    image and a category of the file and has a box or a mask; an RLE's size is its
    image's; every image path stays inside its root (absolute paths and climbing ``..``
    are refused), exists under one of ``image_roots`` (tried in order; the same name
    under two roots as two different files is refused as ambiguous) and has the entry's
    ``height`` x ``width`` on disk (a missing entry size is taken from the file).

    Classes are the categories in order of their id: class_id 0 is the smallest id, so
    COCO's gapped ids 1..90 become 0..79 (``category_ids[class_id]`` maps back).

    Boxes are clamped to the image; an annotation whose box has no area after that (zero
    or negative width or height, or lying outside the image) is dropped and counted in
    ``dropped["degenerate_box"]``. Crowd annotations are kept (``data["iscrowd"]``).

    Masks: an image none of whose annotations has a ``segmentation`` has box-only
    ``Instances`` (``masks`` None). In an image where only some have one, the others'
    boxes are filled as their masks and flagged in ``data["mask_from_box"]``.

    Attributes:
        path: the annotation file.
        image_roots: the folders image paths were looked up in, in order.
        class_names: category names, class_id order.
        category_ids: category id of each class_id.
        images: the image entries, in order of id (``Sample.index`` is the position here).
        paths: each image's file (None with ``check_images=False``).
        dropped: reason -> annotations dropped, only reasons that dropped any.
        num_annotations: annotations in the file (before dropping).
    """

    def __init__(self, annotation_file: str | Path, image_roots=None, *, dataset: dict | None = None,
                 check_images: bool = True):
        self.path = Path(annotation_file)
        name = str(self.path)
        if dataset is None:
            dataset = load_coco_json(self.path)
        for field in ("images", "annotations", "categories"):
            if not isinstance(dataset.get(field), list):
                raise CocoError(f"{name} has no '{field}' list: not a COCO instances file")
        if image_roots is None or isinstance(image_roots, (str, Path)):
            image_roots = default_image_roots(self.path) if image_roots is None else [image_roots]
        self.image_roots = tuple(Path(root) for root in image_roots)
        if not self.image_roots:
            raise CocoError(f"{name}: no image folder given")

        categories = sorted(dataset["categories"], key=lambda c: _id_of(c, "category", name))
        self.category_ids = [c["id"] for c in categories]
        if len(set(self.category_ids)) != len(self.category_ids):
            raise CocoError(f"{name}: category ids repeat: {_repeated(self.category_ids)}")
        self.categories = categories
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        class_of = {cid: k for k, cid in enumerate(self.category_ids)}

        self.images = sorted(dataset["images"], key=lambda i: _id_of(i, "image", name))
        ids = [i["id"] for i in self.images]
        if len(set(ids)) != len(ids):
            raise CocoError(f"{name}: image ids repeat: {_repeated(ids)}")
        position = {image_id: k for k, image_id in enumerate(ids)}
        self.paths: list[Path | None] = []
        self._sizes: list[tuple[int, int]] = []
        for image in self.images:
            path, size = self._check_image(image, check_images)
            self.paths.append(path)
            self._sizes.append(size)

        self.num_annotations = len(dataset["annotations"])
        self._annotations: list[list[dict]] = [[] for _ in self.images]
        self._boxes: list[list[tuple[float, float, float, float]]] = [[] for _ in self.images]
        self._classes: list[list[int]] = [[] for _ in self.images]
        dropped = {"degenerate_box": 0}
        for k, annotation in enumerate(dataset["annotations"]):
            where = f"{name}: annotation {annotation.get('id', f'#{k}')}"
            if not isinstance(annotation, dict):
                raise CocoError(f"{where} is not an object")
            if annotation.get("image_id") not in position:
                raise CocoError(f"{where} refers to image {annotation.get('image_id')!r}, which is not in the file")
            if annotation.get("category_id") not in class_of:
                raise CocoError(f"{where} has category {annotation.get('category_id')!r}, which is not in the "
                                "file's categories (an instances file needs a category_id per annotation)")
            index = position[annotation["image_id"]]
            height, width = self._sizes[index]
            box = _checked_box(annotation, height, width, where)
            if box is None:
                dropped["degenerate_box"] += 1
                continue
            self._annotations[index].append(annotation)
            self._boxes[index].append(box)
            self._classes[index].append(class_of[annotation["category_id"]])
        self.dropped = {reason: count for reason, count in dropped.items() if count}
        kept = [a for annotations in self._annotations for a in annotations]
        self.num_crowd = sum(1 for a in kept if a.get("iscrowd", 0))
        self.num_box_only = sum(1 for a in kept if not has_segmentation(a))
        self.has_masks = any(has_segmentation(a) for a in kept)
        self.num_mask_from_box = sum(
            sum(1 for a in annotations if not has_segmentation(a))
            for annotations in self._annotations if any(has_segmentation(a) for a in annotations))

    # -- checks --

    def _check_image(self, image: dict, check_images: bool) -> tuple[Path | None, tuple[int, int]]:
        name = str(self.path)
        file_name = image_file_name(image)
        if file_name is None:
            raise CocoError(f"{name}: image {image['id']} has no file_name")
        relative = safe_relative_path(file_name)
        if relative is None:
            raise CocoError(f"{name}: image {file_name!r} lies outside its image folder (absolute paths and '..' "
                            "leading out of the folder are refused)")
        height, width = image.get("height"), image.get("width")
        if not check_images:
            if not (_is_size(height) and _is_size(width)):
                raise CocoError(f"{name}: image {file_name!r} has no valid height and width")
            return None, (int(height), int(width))
        found = [root / relative for root in self.image_roots if (root / relative).is_file()]
        if not found:
            looked = ", ".join(str(root) for root in self.image_roots)
            raise CocoError(f"{name}: image {file_name!r} is missing on disk (looked in {looked})")
        for other in found[1:]:
            if not os.path.samefile(found[0], other):
                raise CocoError(f"{name}: image {file_name!r} is ambiguous: both {found[0]} and {other} exist "
                                "(give the one --image-root it belongs to)")
        try:
            with Image.open(found[0]) as file:
                disk_width, disk_height = file.size
        except (OSError, ValueError) as err:
            raise CocoError(f"{name}: image {found[0]} cannot be read as an image: {err}") from None
        if height is None and width is None:
            height, width = disk_height, disk_width
        if not (_is_size(height) and _is_size(width)):
            raise CocoError(f"{name}: image {file_name!r} has an invalid size {height!r} x {width!r}")
        if (int(height), int(width)) != (disk_height, disk_width):
            raise CocoError(f"{name}: image {found[0]} is {disk_height}x{disk_width} (height x width) on disk but "
                            f"{height}x{width} in the file")
        return found[0], (int(height), int(width))

    # -- access --

    def __len__(self) -> int:
        return len(self.images)

    def size(self, index: int) -> tuple[int, int]:
        """(height, width) of image ``index``."""
        return self._sizes[index]

    def annotations(self, index: int) -> list[dict]:
        """The kept (not dropped) annotations of image ``index``, in file order."""
        return list(self._annotations[index])

    def instances(self, index: int) -> Instances:
        """The image's instances: clamped boxes, 0-based classes, score (``score`` field,
        else 1), masks (see the class notes), ``data``: ``iscrowd`` (bool),
        ``annotation_id`` (int64, -1 where the annotation has none) and, with masks,
        ``mask_from_box`` (bool)."""
        annotations = self._annotations[index]
        height, width = self._sizes[index]
        xyxy = np.array(self._boxes[index], np.float32).reshape(-1, 4)
        data = {
            "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool),
            "annotation_id": np.array([int(a.get("id", -1)) for a in annotations], np.int64),
        }
        masks = None
        if any(has_segmentation(a) for a in annotations):
            from_box = np.array([not has_segmentation(a) for a in annotations], bool)
            masks = np.zeros((len(annotations), height, width), bool)
            for k, annotation in enumerate(annotations):
                if from_box[k]:
                    masks[k] = box_masks(xyxy[k:k + 1], height, width)[0]
                else:
                    try:
                        masks[k] = segmentation_to_mask(annotation["segmentation"], height, width)
                    except (ValueError, TypeError, KeyError) as err:
                        raise CocoError(f"{self.path}: annotation {annotation.get('id')}: bad segmentation: "
                                        f"{err}") from None
            data["mask_from_box"] = from_box
        score = np.array([float(a.get("score", 1.0)) for a in annotations], np.float32)
        return Instances(xyxy, np.array(self._classes[index], np.int64), score, masks, data)

    def load_image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB of image ``index``."""
        path = self.paths[index]
        if path is None:
            raise CocoError(f"{self.path} was opened without its images (check_images=False)")
        with Image.open(path) as file:
            image = np.array(file.convert("RGB"))
        if image.shape[:2] != self._sizes[index]:
            raise CocoError(f"{path} changed on disk: it is now {image.shape[0]}x{image.shape[1]}")
        return image

    def sample(self, index: int) -> Sample:
        """Image ``index`` as a ``Sample``: caption and seed from the entry's ``caption`` /
        ``seed`` fields where present (synthscene exports write them), else "" and 0;
        ``extra`` holds the ``image_id`` and ``file_name``."""
        entry = self.images[index]
        return Sample(index=index, seed=int(entry.get("seed", 0)), caption=str(entry.get("caption", "")),
                      image=self.load_image(index), instances=self.instances(index),
                      extra={"image_id": entry["id"], "file_name": image_file_name(entry)})

    __getitem__ = sample

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self.sample(index)

    def report(self) -> dict:
        """JSON-ready counts: images, annotations, kept, crowd, box-only, dropped."""
        kept = sum(len(a) for a in self._annotations)
        return {"source": str(self.path), "images": len(self.images), "annotations": self.num_annotations,
                "kept": kept, "crowd": self.num_crowd, "box_only": self.num_box_only,
                "mask_from_box": self.num_mask_from_box, "dropped": dict(self.dropped)}


def read_coco(annotation_file: str | Path, image_roots=None, *, dataset: dict | None = None,
              check_images: bool = True) -> CocoSource:
    """Open and check a COCO instances file (see ``CocoSource``).

    Args:
        annotation_file: the JSON file (named in every error).
        image_roots: a folder or a list of folders tried in order for each image's
            ``file_name``; None: ``default_image_roots(annotation_file)``.
        dataset: the file's already-loaded content (then it is not read again; RLE counts
            may be bytes here).
        check_images: look every image up and check its size on disk; with False, only
            ``instances`` works (no image is read).
    """
    return CocoSource(annotation_file, image_roots, dataset=dataset, check_images=check_images)


def from_coco(annotation_file: str | Path, image_roots=None) -> Iterator[Sample]:
    """The file's ``Sample``s in order of image id; the file and every image are checked
    before the first one is returned (see ``CocoSource``)."""
    return iter(read_coco(annotation_file, image_roots))


def load_coco_json(path: str | Path) -> dict:
    """The parsed JSON object of ``path`` (a ``CocoError`` if missing or not JSON)."""
    path = Path(path)
    if not path.is_file():
        raise CocoError(f"{path} does not exist")
    try:
        dataset = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CocoError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(dataset, dict):
        raise CocoError(f"{path} is not a COCO instances file (its top level is not an object)")
    return dataset


def _id_of(entry, kind: str, name: str) -> int:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool):
        raise CocoError(f"{name}: a {kind} entry has no integer id: {str(entry)[:80]}")
    return entry["id"]


def _repeated(values) -> str:
    seen, repeated = set(), []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return ", ".join(str(v) for v in repeated[:5])


def _is_size(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 and float(value).is_integer()


def _checked_box(annotation: dict, height: int, width: int, where: str) -> tuple[float, float, float, float] | None:
    """The annotation's box as xyxy clamped to the image, or None when no area is left.
    A missing ``bbox`` is the mask's tight box."""
    segmentation = annotation.get("segmentation")
    if segmentation is not None and segmentation != []:
        if isinstance(segmentation, dict):
            if "counts" not in segmentation or "size" not in segmentation:
                raise CocoError(f"{where}: an RLE segmentation needs 'counts' and 'size'")
            if list(segmentation["size"]) != [height, width]:
                raise CocoError(f"{where} has a mask of size {list(segmentation['size'])} (height, width) but its "
                                f"image is {height}x{width}")
        elif not (isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation)):
            raise CocoError(f"{where}: segmentation is neither a list of polygons nor an RLE")
    bbox = annotation.get("bbox")
    if bbox is None:
        if not has_segmentation(annotation):
            raise CocoError(f"{where} has neither a bbox nor a segmentation")
        if isinstance(segmentation, dict):
            rle = mask_utils.frPyObjects(segmentation, height, width) if isinstance(segmentation["counts"], list) \
                else segmentation
        else:
            polygons = [p for p in segmentation if len(p) >= 6]
            if not polygons:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise CocoError(f"{where}: bbox {bbox!r} is not four numbers (x, y, width, height)") from None
    if not (w > 0 and h > 0):  # also NaN
        return None
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if not (x2 > x1 and y2 > y1):
        return None
    return x1, y1, x2, y2


def keep_categories(dataset: dict, names: list[str] | tuple[str, ...]) -> dict:
    """A copy of a COCO dict that knows only the categories ``names`` (ids kept): their
    annotations stay, every image stays (objects of other classes become unlabelled
    background), e.g. the base-class data of an open-vocabulary split.

    Raises:
        CocoError: a name the file has no category for.
    """
    known = {c["name"]: c for c in dataset.get("categories", [])}
    missing = [n for n in names if n not in known]
    if missing:
        raise CocoError(f"the COCO file has no categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} "
                        f"(it has {', '.join(known) or 'none'})")
    ids = {known[n]["id"] for n in names}
    return {**dataset, "categories": [c for c in dataset["categories"] if c["id"] in ids],
            "annotations": [a for a in dataset.get("annotations", []) if a["category_id"] in ids]}
