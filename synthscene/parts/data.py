"""Part-annotated instances as the part network sees them: square crops of one shape.

A part-annotated dataset is a COCO instances file plus, beside every image, a part map
PNG in a ``parts/`` folder that mirrors the image's ``images/`` folder (0: no part, else
1 + an index into the dataset's part list), and that part list in ``world.json`` or
``parts.json`` at the dataset root: ``{"parts": [{"class": "box", "name": "face"}, ...]}``.
``synthscene world`` writes exactly this.

Every instance is cut out as a ``CROP`` x ``CROP`` square around its box (a margin on each
side, zero outside the image) so that shapes of any size look alike to the network; its
parts are numbered per class there (0 outside the shape, 1..n the class's parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from synthscene.codecs import load_semantic_png

CROP = 64
MARGIN = 0.1  # of the box's longer side, on each side


@dataclass(frozen=True)
class PartSchema:
    """Which parts each class has, in the order a part map numbers them (value 1 + index)."""

    parts: tuple[tuple[str, str], ...]  # (class name, part name)

    @classmethod
    def from_json(cls, rows: list) -> PartSchema:
        try:
            parts = tuple((str(row["class"]), str(row["name"])) for row in rows)
        except (TypeError, KeyError):
            raise ValueError('a part list is [{"class": ..., "name": ...}, ...]') from None
        if len(set(parts)) != len(parts):
            raise ValueError(f"a part is listed twice in {[f'{c}/{p}' for c, p in parts]}")
        return cls(parts)

    @classmethod
    def read(cls, root: str | Path) -> PartSchema:
        """The part list of a dataset folder (``world.json`` or ``parts.json``)."""
        root = Path(root)
        for name in ("parts.json", "world.json"):
            if (root / name).is_file():
                rows = json.loads((root / name).read_text()).get("parts")
                if not rows:
                    raise ValueError(f"{root / name} lists no parts: this dataset has no part labels")
                return cls.from_json(rows)
        raise FileNotFoundError(f"{root} has no parts.json or world.json: not a part-annotated dataset")

    def to_json(self) -> list[dict]:
        return [{"class": c, "name": p} for c, p in self.parts]

    @property
    def classes(self) -> tuple[str, ...]:
        """The part-aware classes, in order of their first part."""
        return tuple(dict.fromkeys(c for c, _ in self.parts))

    def part_names(self, class_name: str) -> tuple[str, ...]:
        return tuple(p for c, p in self.parts if c == class_name)

    def global_ids(self, class_name: str) -> tuple[int, ...]:
        """The part-map values of a class's parts, in its order."""
        return tuple(i + 1 for i, (c, _) in enumerate(self.parts) if c == class_name)

    @property
    def max_parts(self) -> int:
        return max(len(self.part_names(c)) for c in self.classes)


@dataclass(frozen=True)
class PartShape:
    """One instance of a part-aware class, cropped.

    Attributes:
        class_name: its class.
        shape: bool [CROP, CROP], the instance's (visible) mask in the crop.
        parts: uint8 [CROP, CROP], 0 outside the shape, 1..n the class's parts; None when
            not known (a layout's instance, to be inferred).
    """

    class_name: str
    shape: np.ndarray
    parts: np.ndarray | None = None


def crop_matrix(mask: np.ndarray, size: int = CROP, margin: float = MARGIN) -> np.ndarray:
    """float64 [2, 3]: the affine map from image pixels to the crop of ``mask``'s box."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("cannot crop an empty mask")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    scale = size / side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])


def crop_shape(mask: np.ndarray, matrix: np.ndarray, size: int = CROP) -> np.ndarray:
    """bool [size, size]: ``mask`` seen through ``matrix`` (bilinear, then halfway)."""
    return cv2.warpAffine(mask.astype(np.float32), matrix, (size, size), flags=cv2.INTER_LINEAR) >= 0.5


def crop_labels(labels: np.ndarray, matrix: np.ndarray, size: int = CROP) -> np.ndarray:
    """uint8 [size, size]: a label map seen through ``matrix`` (nearest label)."""
    return cv2.warpAffine(labels.astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST)


def uncrop_scores(scores: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [n, height, width]: per-part scores of a crop [n, CROP, CROP] back in the image."""
    return np.stack([
        cv2.warpAffine(channel.astype(np.float32), matrix, (width, height),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        for channel in scores])


def local_parts(part_map: np.ndarray, mask: np.ndarray, global_ids: tuple[int, ...]) -> np.ndarray:
    """uint8 [H, W]: 0 outside ``mask``, 1..n where the part map holds the class's parts."""
    local = np.zeros(mask.shape, np.uint8)
    for k, global_id in enumerate(global_ids, 1):
        local[mask & (part_map == global_id)] = k
    return local


def cut_instance(class_name: str, mask: np.ndarray, local: np.ndarray | None = None) -> tuple[PartShape, np.ndarray]:
    """The crop of one instance (and its class-local part map, if known) and its matrix."""
    matrix = crop_matrix(mask)
    shape = crop_shape(mask, matrix)
    parts = None
    if local is not None:
        parts = crop_labels(local, matrix)
        parts[~shape] = 0
        # a shape pixel the nearest-label crop left without a part takes its nearest part
        parts = fill_parts(parts, shape)
    return PartShape(class_name, shape, parts), matrix


def fill_parts(parts: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """``parts`` with every pixel of ``shape`` labelled: an unlabelled one takes the label of
    the nearest labelled pixel, inside ``shape`` or not (left as is when nothing is labelled)."""
    missing = shape & (parts == 0)
    if not missing.any() or not (parts > 0).any():
        return parts
    _, nearest = cv2.distanceTransformWithLabels((parts == 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    labelled = parts > 0
    values = np.zeros(nearest.max() + 1, np.uint8)
    values[nearest[labelled]] = parts[labelled]
    filled = parts.copy()
    filled[missing] = values[nearest[missing]]
    return filled


def part_map_file(image_file: Path) -> Path:
    """A part map's path: the image's, with its last ``images`` folder read as ``parts`` and
    the suffix ``.png``."""
    folders = list(image_file.parts)
    for k in range(len(folders) - 2, -1, -1):
        if folders[k] == "images":
            folders[k] = "parts"
            return Path(*folders).with_suffix(".png")
    raise ValueError(f"{image_file} is not inside an images/ folder, so its part map cannot be found")


def iter_part_instances(root: str | Path, split: str = "train", max_images: int | None = None,
                        progress: bool = True):
    """The part list of a part-annotated dataset, then (class name, bool mask [H, W], its
    class-local parts uint8 [H, W]) for every instance of a part-aware class of one split.

    Args:
        root: the dataset folder (``annotations/instances_{split}.json``, its images, the
            part maps beside them, the part list).
        max_images: read only the first this many images.
    """
    from synthscene.formats.coco import load_coco_json, read_coco

    root = Path(root)
    schema = PartSchema.read(root)
    yield schema
    annotation_file = root / "annotations" / f"instances_{split}.json"
    if not annotation_file.is_file():
        raise FileNotFoundError(f"{annotation_file} does not exist: no {split!r} split in {root}")
    dataset = load_coco_json(annotation_file)
    names = {str(c.get("name")) for c in dataset.get("categories") or [] if isinstance(c, dict)}
    unknown = [c for c in schema.classes if c not in names]
    if unknown:
        raise ValueError(f"{root}: the part list names classes the annotations do not have: {', '.join(unknown)}")
    source = read_coco(annotation_file, [root], dataset=dataset)
    count = len(source) if max_images is None else min(max_images, len(source))
    for index in tqdm(range(count), desc=f"part shapes {split}", disable=not progress):
        instances = source.instances(index)
        wanted = [k for k, c in enumerate(instances.class_id) if source.class_names[c] in schema.classes]
        if not wanted:
            continue
        if instances.masks is None:
            raise ValueError(f"{annotation_file}: image {source.images[index]['id']} has no masks; part "
                             "inference learns from instance masks")
        part_map = load_semantic_png(part_map_file(Path(source.paths[index])))
        for k in wanted:
            name = source.class_names[instances.class_id[k]]
            mask = instances.masks[k]
            if mask.any():
                yield name, mask, local_parts(part_map, mask, schema.global_ids(name))


def read_part_shapes(root: str | Path, split: str = "train", max_images: int | None = None,
                     progress: bool = True) -> tuple[PartSchema, list[PartShape]]:
    """The part list and the crops of every instance of a part-aware class of one split
    (see ``iter_part_instances``)."""
    rows = iter_part_instances(root, split, max_images, progress)
    schema = next(rows)
    return schema, [cut_instance(name, mask, local)[0] for name, mask, local in rows]


def shape_iou(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """float [N]: IoU of one bool crop with each of N bool crops."""
    flat = candidates.reshape(len(candidates), -1)
    q = query.reshape(-1)
    inter = (flat & q).sum(1)
    union = (flat | q).sum(1)
    return inter / np.maximum(union, 1)


@dataclass
class SupportBank:
    """Annotated shapes per class, the supports part inference compares a new shape with."""

    shapes: dict[str, np.ndarray]  # class -> bool [N, CROP, CROP]
    parts: dict[str, np.ndarray]  # class -> uint8 [N, CROP, CROP]

    @classmethod
    def build(cls, examples: list[PartShape], per_class: int | None = None,
              rng: np.random.Generator | None = None) -> SupportBank:
        shapes, parts = {}, {}
        for name in dict.fromkeys(e.class_name for e in examples):
            chosen = [e for e in examples if e.class_name == name]
            if per_class is not None and len(chosen) > per_class:
                rng = rng or np.random.default_rng(0)
                chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), per_class, replace=False))]
            shapes[name] = np.stack([e.shape for e in chosen])
            parts[name] = np.stack([e.parts for e in chosen])
        return cls(shapes, parts)

    def nearest(self, query: PartShape, k: int, exclude: int | None = None) -> np.ndarray:
        """Indices of the ``k`` shapes of the query's class most like it (IoU of the crops),
        best first; ``exclude`` one index (the query itself, when it is in the bank)."""
        if query.class_name not in self.shapes:
            raise ValueError(f"no support shapes for class {query.class_name!r}: part inference needs annotated "
                             f"examples of every part-aware class (have: {', '.join(self.shapes) or 'none'})")
        iou = shape_iou(query.shape, self.shapes[query.class_name])
        if exclude is not None:
            iou[exclude] = -1
        return np.argsort(-iou, kind="stable")[:k]
