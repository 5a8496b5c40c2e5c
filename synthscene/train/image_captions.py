"""Image-caption training sets for the generator trainer.

Four inputs are accepted:
- a folder with ``metadata.jsonl`` (the Hugging Face imagefolder convention used by
  diffusers' text-to-image examples): one ``{"file_name": ..., "text": ...}`` per line;
- a ``.jsonl`` file of the same rows (paths relative to the file's folder);
- a COCO captions JSON (``images`` with ``file_name``, ``annotations`` with ``caption``);
  image paths are relative to ``image_root`` (default: the JSON's folder);
- a COCO instances JSON with ``classes_from_annotations``: square crops around the boxes,
  captioned "a photograph of A and B" by the classes inside each crop (InstaGen's
  fine-tuning set; ``read_box_crops``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from synthscene.codecs import UndecodableImageError, check_image_decodes


class TrainingDataError(ValueError):
    """The training set cannot be used; the message says which file and why."""


class TrainingImage(NamedTuple):
    """One training example: an image file, its caption, and optionally the square of it
    to train on ((x0, y0, side) in pixels; None: the whole image)."""

    path: Path
    caption: str
    crop: tuple[int, int, int] | None = None


def read_image_captions(path: str | Path, image_root: str | Path | None = None) -> list[TrainingImage]:
    """The examples of a training set of captioned images, in file order."""
    path = Path(path)
    if path.is_dir():
        if not (path / "metadata.jsonl").is_file():
            raise TrainingDataError(f"{path} is a folder without metadata.jsonl (expected rows of file_name + text)")
        return _read_jsonl(path / "metadata.jsonl", Path(image_root or path))
    if not path.is_file():
        raise TrainingDataError(f"training data {path} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path, Path(image_root or path.parent))
    if path.suffix == ".json":
        return _read_coco_captions(path, Path(image_root or path.parent))
    raise TrainingDataError(f"training data {path}: expected a folder, a .jsonl or a COCO captions .json")


def _read_jsonl(path: Path, root: Path) -> list[TrainingImage]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append(TrainingImage(root / row["file_name"], str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise TrainingDataError(f"{path}:{line_no}: expected a JSON object with file_name and text ({err})") from err
    return pairs


def _read_coco_captions(path: Path, root: Path) -> list[TrainingImage]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        return [TrainingImage(root / files[a["image_id"]], str(a["caption"])) for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise TrainingDataError(f"{path}: not a COCO captions file (images + annotations with caption): {err}") from err


def read_box_crops(annotation_file: str | Path, image_root: str | Path | None = None,
                   classes: list[str] | None = None, context: float = 1.5, min_side: int = 0,
                   template: str = "a photograph of {names}") -> list[TrainingImage]:
    """InstaGen's fine-tuning set from a COCO instances file: per (non-crowd) box of the
    chosen classes, the square around it ``context`` x its longer side (at least
    ``min_side``, at most the image's shorter side; moved inside the image), captioned by
    the chosen classes whose boxes lie at least half inside it, in order of area.

    Raises:
        TrainingDataError: the file is not a COCO instances file, names none of ``classes``,
            or has no box of them.
    """
    from synthscene.formats.coco import CocoError, CocoSource

    try:
        source = CocoSource(annotation_file, image_root)
    except CocoError as err:
        raise TrainingDataError(str(err)) from None
    names = list(classes) if classes else source.class_names
    missing = [n for n in names if n not in source.class_names]
    if missing:
        raise TrainingDataError(f"{annotation_file} has no categor{'y' if len(missing) == 1 else 'ies'} "
                                f"{', '.join(missing)} (it has {', '.join(source.class_names)})")
    wanted = {source.class_names.index(n) for n in names}
    crops = []
    for index in range(len(source)):
        height, width = source.size(index)
        instances = source.instances(index)
        keep = np.isin(instances.class_id, list(wanted)) & ~instances.data["iscrowd"].astype(bool)
        boxes, class_ids = instances.xyxy[keep], instances.class_id[keep]
        for x0, y0, x1, y1 in boxes.tolist():
            side = int(min(min(height, width), max(min_side, round(context * max(x1 - x0, y1 - y0)))))
            left = int(min(max(0, round((x0 + x1 - side) / 2)), width - side))
            top = int(min(max(0, round((y0 + y1 - side) / 2)), height - side))
            inside = _share_inside(boxes, (left, top, left + side, top + side))
            order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
            present = list(dict.fromkeys(source.class_names[class_ids[k]] for k in order if inside[k] >= 0.5))
            crops.append(TrainingImage(source.paths[index], template.format(names=_join(present)), (left, top, side)))
    if not crops:
        raise TrainingDataError(f"{annotation_file} has no box of the classes {', '.join(names)}")
    return crops


def _share_inside(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = window
    w = (np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0)).clip(0)
    h = (np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0)).clip(0)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clip(1e-9)
    return w * h / area


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_image_captions(pairs: list[TrainingImage], tokenizer, progress: bool = True) -> None:
    """Refuse an unusable training set before anything is written: empty, missing or
    undecodable images, empty captions, captions longer than the tokenizer allows."""
    if not pairs:
        raise TrainingDataError("the training set is empty")
    limit = tokenizer.model_max_length
    for image_path in tqdm(sorted({p.path for p in pairs}), desc="checking training data", disable=not progress,
                           leave=False):
        try:
            check_image_decodes(image_path)
        except UndecodableImageError as err:
            raise TrainingDataError(str(err)) from None
    for image_path, caption, _ in pairs:
        if not caption.strip():
            raise TrainingDataError(f"image {image_path} has an empty caption")
    lengths = [len(ids) for ids in tokenizer([p.caption for p in pairs]).input_ids]
    for (image_path, caption, _), length in zip(pairs, lengths):
        if length > limit:
            raise TrainingDataError(
                f"caption of {image_path} has {length} tokens, more than the text encoder's {limit}: {caption[:80]!r}..."
            )


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Images (or their crop squares) as float tensors in [-1, 1], resized to ``resolution``
    (and centre-cropped), with their captions."""

    def __init__(self, pairs: list[TrainingImage], resolution: int):
        self.pairs = pairs
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path, caption, crop = self.pairs[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
            if crop is not None:
                left, top, side = crop
                image = image.crop((left, top, left + side, top + side))
            if image.size != (self.resolution, self.resolution):
                image = _resize_centre_crop(image, self.resolution)
            array = np.asarray(image, np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1), caption


def _resize_centre_crop(image: Image.Image, size: int) -> Image.Image:
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))
