"""Export a run as a Hugging Face ``datasets`` dataset: parquet shards and a dataset card.

Layout::

    README.md                               dataset card: YAML header the Hub and
                                            ``load_dataset(folder)`` read, then a summary
    data/train-00000-of-0000N.parquet       ``samples_per_file`` samples each, in index order

The folder loads with ``datasets.load_dataset("path/to/out")`` (the card's ``configs``
name the files) or ``load_dataset("parquet", data_files="path/to/out/data/*.parquet")``
(each file's schema metadata carries the ``datasets`` features, class names included).

One row per sample; the columns (``hf_features`` builds them):

- ``image``: ``Image``, the run's stored PNG byte for byte (no re-encoding).
- ``semantic``: ``Image``, the stored palette PNG (pixel values are class indices:
  0 background, 1..C the classes in ``objects.category`` order shifted by one, 255
  ignore), or null for box-only samples.
- ``index``, ``seed``: int64; ``caption``: string; ``width``, ``height``: int32.
- ``objects``: a struct of per-instance lists, as the Hub's detection datasets have it:
  ``bbox`` [x, y, w, h] float32 pixels (COCO order; x2 = x + w is exclusive),
  ``category`` ``ClassLabel`` (0-based, the run's classes), ``area`` int64 (mask pixels,
  or the box's area for box-only instances), ``score`` float32 (the labeller's
  confidence) and ``segmentation``: a COCO compressed RLE ``{"size": [h, w], "counts": str}``
  per instance (decode with ``pycocotools.mask.decode``), or **null** for an instance
  without a mask. A null struct keeps the column typed in a box-only run, and cannot be
  mistaken for a mask the way an empty RLE could. ``attributes``: a JSON object per
  instance with the labeller's check scores (``Instances.data``; null where a check did
  not run), as a string since the fields differ between methods.

The datasets are built in memory (``Dataset.from_dict`` per file) rather than with
``from_generator``, which would write a copy of everything into the user's HF cache.
``datasets`` is an optional dependency (``synthscene[hf]``): it is imported on use.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from synthscene.codecs import IGNORE_INDEX, json_value, mask_to_rle
from synthscene.models.info import EMBEDDED_MODELS
from synthscene.records import Sample
from synthscene.store import Run, SampleFiles

if TYPE_CHECKING:
    import datasets

SPLIT = "train"
DATA_DIR = "data"
# the Hub's size buckets (its metadata validator accepts only these labels)
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (10**9, "100M<n<1B"),
                    (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T"))


def import_datasets():
    """The ``datasets`` module, or one clear line saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ValueError("--format hf needs the 'datasets' package: pip install 'synthscene[hf]'") from None
    return datasets


def hf_features(class_names: list[str] | tuple[str, ...]) -> datasets.Features:
    """The ``datasets.Features`` of an exported run (see the module docstring)."""
    ds = import_datasets()
    Value, List = ds.Value, ds.List  # List, not Sequence: Sequence({...}) turns a struct into lists
    rle = {"size": List(Value("int32"), length=2), "counts": Value("string")}
    return ds.Features({
        "image": ds.Image(),
        "semantic": ds.Image(),
        "index": Value("int64"),
        "seed": Value("int64"),
        "caption": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "objects": {
            "bbox": List(List(Value("float32"), length=4)),
            "category": List(ds.ClassLabel(names=list(class_names))),
            "area": List(Value("int64")),
            "score": List(Value("float32")),
            "segmentation": List(rle),
            "attributes": List(Value("string")),
        },
    })


def sample_row(sample: Sample, files: SampleFiles) -> dict:
    """One row of the dataset: the sample's labels and its stored files' bytes."""
    inst = sample.instances
    xyxy = inst.xyxy.astype("float32")
    bbox = [[float(v) for v in (x1, y1, x2 - x1, y2 - y1)] for x1, y1, x2, y2 in xyxy]
    if inst.masks is None:
        segmentation = [None] * len(inst)
    else:
        segmentation = [mask_to_rle(mask) for mask in inst.masks]
    # "path": None, so datasets keeps these bytes rather than re-reading (or dropping) a file
    semantic = None if files.semantic is None else {"bytes": files.semantic.read_bytes(), "path": None}
    return {
        "image": {"bytes": files.image.read_bytes(), "path": None},
        "semantic": semantic,
        "index": int(sample.index),
        "seed": int(sample.seed),
        "caption": sample.caption,
        "width": sample.width,
        "height": sample.height,
        "objects": {"bbox": bbox, "category": inst.class_id.tolist(), "area": inst.area.tolist(),
                    "score": inst.score.tolist(), "segmentation": segmentation,
                    "attributes": [json.dumps({k: json_value(v[i]) for k, v in inst.data.items()}, sort_keys=True)
                                   for i in range(len(inst))]},
    }


def rows_to_dataset(rows: list[dict], features: datasets.Features) -> datasets.Dataset:
    """An in-memory ``Dataset`` of ``sample_row`` rows, typed by ``features``."""
    ds = import_datasets()
    columns = {name: [row[name] for row in rows] for name in features}
    return ds.Dataset.from_dict(columns, features=features)


def write_hf(run: Run, out: Path, samples_per_file: int = 500) -> None:
    """Write ``run`` into the empty folder ``out`` as parquet shards and a dataset card."""
    if samples_per_file < 1:
        raise ValueError(f"samples_per_file must be at least 1, got {samples_per_file}")
    features = hf_features(run.class_names)
    data = Path(out) / DATA_DIR
    data.mkdir()
    # the file names hold the total, unknown until the run's records are read: write
    # numbered files first and rename them after, rather than reading every record twice
    written: list[Path] = []
    num_samples = num_instances = 0
    with _quiet_progress():
        for chunk in _chunks(run.items(), samples_per_file):
            rows = [sample_row(sample, files) for sample, files in chunk]
            num_samples += len(rows)
            num_instances += sum(len(row["objects"]["category"]) for row in rows)
            path = data / f"part-{len(written):05d}.parquet"
            rows_to_dataset(rows, features).to_parquet(str(path))
            written.append(path)
        if not written:  # an empty run still gets one (empty) file, so it loads with its features
            path = data / "part-00000.parquet"
            rows_to_dataset([], features).to_parquet(str(path))
            written.append(path)
    for k, path in enumerate(written):
        path.rename(data / f"{SPLIT}-{k:05d}-of-{len(written):05d}.parquet")
    card = dataset_card(run, features, num_samples, num_instances)
    (Path(out) / "README.md").write_text(card, encoding="utf-8")


def public_model_name(model: str) -> str:
    """The model as a card meant for sharing may name it: "embedded", "embedded-mmdit" or a hub id as given,
    a local folder by its last part only (its full path would tell where the user keeps files)."""
    path = Path(model)
    if model in EMBEDDED_MODELS or not (path.is_absolute() or path.exists() or model.startswith(".")):
        return model
    return f"local folder {path.name}"


def dataset_card(run: Run, features: datasets.Features, num_samples: int, num_instances: int) -> str:
    """README.md: a YAML header (Hub metadata, the files' config, the features) and a
    short markdown summary. Run strings (name, model, classes) are user input: the header
    is written by ``yaml.safe_dump`` and the body escapes them."""
    header = {
        "pretty_name": run.spec.name,
        "tags": ["synthetic", "synthscene"],
        "task_categories": ["object-detection", "image-segmentation"],
        "size_categories": [size_category(num_samples)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/{SPLIT}-*.parquet"}]}],
    }
    info = _dataset_info_yaml(features)
    if info is not None:
        header["dataset_info"] = info
    classes = "\n".join(f"{k}. {_md(name)}" for k, name in enumerate(run.class_names, 1))
    body = f"""# {_md(run.spec.name)}

A synthetic dataset made by synthscene: method {_md(run.spec.method)}, model
{_md(public_model_name(run.spec.model))}. {num_samples} samples, {num_instances} instances, one
split ({SPLIT}).

## Classes

`objects.category` is 0-based in this order; semantic masks number them from 1.

{classes}

## Loading

```python
from datasets import load_dataset

ds = load_dataset("path/to/this/folder", split="train")
# or, from the files alone (their schema carries the features):
ds = load_dataset("parquet", data_files="path/to/this/folder/data/*.parquet", split="train")
```

## Labels

- `image`: the generated RGB image (PNG).
- `semantic`: a palette PNG whose pixel values are class indices (`np.array(row["semantic"])`):
  0 background, 1..C the classes above, {IGNORE_INDEX} ignore (pixels no one should train or be scored
  on). Null for box-only samples.
- `objects.bbox`: `[x, y, width, height]` in pixels (COCO order); `x + width` is exclusive.
- `objects.area`: the mask's pixel count (the box's area for box-only instances).
- `objects.score`: the labeller's confidence.
- `objects.segmentation`: COCO compressed RLE, null for an instance without a mask:

```python
from pycocotools import mask as mask_utils

rle = row["objects"]["segmentation"][k]
mask = mask_utils.decode({{"size": rle["size"], "counts": rle["counts"].encode()}}).astype(bool)
```
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def size_category(num_samples: int) -> str:
    """The Hub's ``size_categories`` label for ``num_samples`` rows."""
    for limit, label in _SIZE_CATEGORIES:
        if num_samples < limit:
            return label
    return "n>1T"


def _dataset_info_yaml(features: datasets.Features) -> dict | None:
    """``dataset_info`` of the card as ``datasets`` writes it (``{"features": [...]}``),
    or None if this ``datasets`` has no such API; the header is optional since every
    parquet file carries the features in its schema metadata."""
    try:
        from datasets import DatasetInfo
        from datasets.info import DatasetInfosDict
        from huggingface_hub import DatasetCardData
    except ImportError:
        return None
    card_data = DatasetCardData()
    DatasetInfosDict({"default": DatasetInfo(features=features)}).to_dataset_card_data(card_data)
    return card_data.to_dict().get("dataset_info")


# markdown's punctuation (CommonMark lets any ASCII punctuation be backslash-escaped),
# except what html.escape turns into entities, whose own "&" and "#" must stay as they are
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]()#!|~{}+\-.=:])")


def _md(text: str) -> str:
    """User text as inert markdown: one line, markdown punctuation backslash-escaped, then
    HTML escaped (so a class name can add no tag, link, heading, list or table cell)."""
    return html.escape(_MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split())))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@contextlib.contextmanager
def _quiet_progress():
    """No ``datasets`` progress bar per parquet file (the caller reports progress), and
    the user's own setting back afterwards."""
    ds = import_datasets()
    was_disabled = ds.are_progress_bars_disabled()
    ds.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            ds.enable_progress_bars()
