"""Image-caption training sets for the generator trainer.

Three inputs are accepted:
- a folder with ``metadata.jsonl`` (the Hugging Face imagefolder convention used by
  diffusers' text-to-image examples): one ``{"file_name": ..., "text": ...}`` per line;
- a ``.jsonl`` file of the same rows (paths relative to the file's folder);
- a COCO captions JSON (``images`` with ``file_name``, ``annotations`` with ``caption``);
  image paths are relative to ``image_root`` (default: the JSON's folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm


class TrainingDataError(ValueError):
    """The training set cannot be used; the message says which file and why."""


def read_image_captions(path: str | Path, image_root: str | Path | None = None) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a training set, in file order."""
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


def _read_jsonl(path: Path, root: Path) -> list[tuple[Path, str]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((root / row["file_name"], str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise TrainingDataError(f"{path}:{line_no}: expected a JSON object with file_name and text ({err})") from err
    return pairs


def _read_coco_captions(path: Path, root: Path) -> list[tuple[Path, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        return [(root / files[a["image_id"]], str(a["caption"])) for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise TrainingDataError(f"{path}: not a COCO captions file (images + annotations with caption): {err}") from err


def check_image_captions(pairs: list[tuple[Path, str]], tokenizer, progress: bool = True) -> None:
    """Refuse an unusable training set before anything is written: empty, missing or
    undecodable images, empty captions, captions longer than the tokenizer allows."""
    if not pairs:
        raise TrainingDataError("the training set is empty")
    limit = tokenizer.model_max_length
    for image_path, _caption in tqdm(pairs, desc="checking training data", disable=not progress):
        if not image_path.is_file():
            raise TrainingDataError(f"image {image_path} does not exist")
        try:
            with Image.open(image_path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise TrainingDataError(f"image {image_path} is corrupt or not an image: {err}") from err
    for image_path, caption in pairs:
        if not caption.strip():
            raise TrainingDataError(f"image {image_path} has an empty caption")
    lengths = [len(ids) for ids in tokenizer([c for _, c in pairs]).input_ids]
    for (image_path, caption), length in zip(pairs, lengths):
        if length > limit:
            raise TrainingDataError(
                f"caption of {image_path} has {length} tokens, more than the text encoder's {limit}: {caption[:80]!r}..."
            )


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Images as float tensors in [-1, 1] (resized to ``resolution`` and centre-cropped)
    with their captions."""

    def __init__(self, pairs: list[tuple[Path, str]], resolution: int):
        self.pairs = pairs
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path, caption = self.pairs[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
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
