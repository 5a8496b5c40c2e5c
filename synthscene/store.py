"""The sample store: one record schema and the run folder every stage reads.

Layout of a run folder::

    spec.resolved.yaml   the validated spec with every default filled in
    manifest.jsonl       one task per line (the method's ``Task.to_json``), written before any sample
    run.json             model fingerprint, versions, backend
    shards/shard-00000/  images/*.png, semantic/*.png, records.jsonl
    .locks/              one lock file per shard being made (see ``claim_shard``)
    dataset_card.json/md written after the last shard

A view (``synthscene filter``, ``synthscene.filter``) is a run folder with ``view.json``:
its records' images stay in the source run's shard of the same name (``view.json``
``source``), unless it copied them.

A shard is built under a temporary name and renamed when complete, so a killed run
leaves finished shards and at most one temporary folder per shard, which ``--resume``
replaces. ``to_record`` / ``from_record`` are the only code that knows the JSON form of
a ``Sample``; everything else opens a run with ``open_run``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from synthscene.codecs import json_value, load_semantic_png, mask_to_rle, rle_to_mask, save_semantic_png
from synthscene.io import naming_write_errors, replace_dir
from synthscene.plan import shard_ranges
from synthscene.records import Instances, Sample
from synthscene.spec import SpecError, load_yaml, validate_spec

SHARDS = "shards"
LOCKS = ".locks"
RECORDS = "records.jsonl"
VIEW = "view.json"


class RunError(ValueError):
    """A run folder is missing, unfinished or damaged; the message names the file."""


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_is_done(root: Path, shard: int) -> bool:
    return (Path(root) / SHARDS / shard_name(shard) / RECORDS).is_file()


# ---- the record schema ------------------------------------------------------------------


def to_record(sample: Sample, image_file: str, semantic_file: str | None, parts_file: str | None = None) -> dict:
    """The JSON record of a sample: its files, caption, seed and instances (RLE masks)."""
    inst = sample.instances
    areas = inst.area
    instances = []
    for k in range(len(inst)):
        item = {"class_id": int(inst.class_id[k]), "xyxy": [float(v) for v in inst.xyxy[k]],
                "score": round(float(inst.score[k]), 6), "area": int(areas[k])}
        if inst.masks is not None:
            item["mask"] = mask_to_rle(inst.masks[k])
        if inst.data:
            item["data"] = {name: json_value(values[k]) for name, values in inst.data.items()}
        instances.append(item)
    record = {"index": sample.index, "seed": sample.seed, "caption": sample.caption, "image": image_file,
            "semantic": semantic_file, "height": sample.height, "width": sample.width,
            "class_ids": [int(c) for c in sample.class_ids], "dropped": {k: int(v) for k, v in sample.dropped.items()},
            "extra": sample.extra, "has_masks": inst.masks is not None, "instances": instances}
    if parts_file is not None:  # only part-labelled samples carry the key
        record["parts"] = parts_file
    return record


def _data_array(values: list) -> np.ndarray:
    """The stored values of one ``data`` field as an array (null back to NaN)."""
    if any(v is None for v in values):
        return np.array([np.nan if v is None else v for v in values], np.float32)
    array = np.asarray(values)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def from_record(record: dict, folder: Path) -> Sample:
    """Rebuild a ``Sample`` from its record and the folder its file paths are relative to."""
    semantic = record_path(folder, record["semantic"]) if record.get("semantic") else None
    return _read_sample(record, record_path(folder, record["image"]), semantic, _parts_file(record, folder))


def _parts_file(record: dict, folder: Path) -> Path | None:
    return record_path(folder, record["parts"]) if record.get("parts") else None


def _read_sample(record: dict, image_file: Path, semantic_file: Path | None, parts_file: Path | None = None) -> Sample:
    image = np.array(Image.open(image_file).convert("RGB"))
    semantic = load_semantic_png(semantic_file) if semantic_file is not None else None
    parts = load_semantic_png(parts_file) if parts_file is not None else None
    items = record["instances"]
    height, width = image.shape[:2]
    has_masks = record.get("has_masks", True)
    if items:
        data_names = sorted({name for item in items for name in item.get("data", {})})
        instances = Instances(
            xyxy=np.array([i["xyxy"] for i in items], np.float32),
            class_id=np.array([i["class_id"] for i in items], np.int64),
            score=np.array([i["score"] for i in items], np.float32),
            masks=np.stack([rle_to_mask(i["mask"]) for i in items]) if has_masks else None,
            data={name: _data_array([i["data"][name] for i in items]) for name in data_names},
        )
    else:
        instances = Instances.empty(height, width) if has_masks else Instances.empty()
    if "caption" in record:
        return Sample(record["index"], record["seed"], record["caption"], image, instances, semantic,
                      tuple(record["class_ids"]), dict(record["dropped"]), dict(record.get("extra") or {}), parts)
    # runs written before the record schema had a version of its own (prompt, dropped_small, ...)
    extra = {k: record[k] for k in ("layout", "region_prompts", "regions_kept") if k in record}
    return Sample(record["index"], record["seed"], record["prompt"], image, instances, semantic,
                  tuple(record.get("class_ids", ())), {"small": record.get("dropped_small", 0)}, extra)


def record_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (records are untrusted)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"record path {relative!r} leaves its shard folder {root}")
    return path


# ---- shards -------------------------------------------------------------------------------


def write_shard(root: Path, shard: int, samples: list[Sample]) -> Path:
    """Write ``samples`` as shard number ``shard`` atomically; returns its folder."""
    final = Path(root) / SHARDS / shard_name(shard)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with naming_write_errors(tmp):
            (tmp / "images").mkdir(parents=True)
            (tmp / "semantic").mkdir()
            lines = []
            for sample in samples:
                name = f"{sample.index:07d}.png"
                Image.fromarray(sample.image).save(tmp / "images" / name)
                semantic_file = parts_file = None
                if sample.semantic is not None:
                    save_semantic_png(sample.semantic, tmp / "semantic" / name)
                    semantic_file = f"semantic/{name}"
                if sample.parts is not None:
                    (tmp / "parts").mkdir(exist_ok=True)
                    save_semantic_png(sample.parts, tmp / "parts" / name)
                    parts_file = f"parts/{name}"
                lines.append(json.dumps(to_record(sample, f"images/{name}", semantic_file, parts_file), sort_keys=True))
            (tmp / RECORDS).write_text("".join(line + "\n" for line in lines))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no partial shard is left behind
        raise
    replace_dir(tmp, final)
    return final


class ShardBusyError(RuntimeError):
    """Another process holds this shard."""


@contextlib.contextmanager
def claim_shard(root: Path, shard: int):
    """Hold shard ``shard`` of the run at ``root`` for this process while it is made.

    An exclusive ``flock`` on ``.locks/shard-NNNNN.lock`` (which records the holder's pid):
    two processes working on one run (two resumes, array jobs, Ray actors) never make the
    same shard at once, and the kernel frees the lock when its holder dies, even by kill -9.
    Raises ``ShardBusyError`` at once when another process holds it.
    """
    locks = Path(root) / LOCKS
    locks.mkdir(exist_ok=True)
    path = locks / f"{shard_name(shard)}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShardBusyError(f"shard {shard} of {root} is being made by another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_lock(root: Path):
    """Exclusive lock on the run folder while its spec and manifest are written or checked."""
    with open(Path(root) / LOCKS / "run.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- a run, opened ------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleFiles:
    """Where a stored sample's files are (exports copy them byte for byte)."""

    image: Path
    semantic: Path | None


class Run:
    """A run folder opened for reading: its spec, manifest tasks, provenance and samples."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        spec_file = self.root / "spec.resolved.yaml"
        if not spec_file.is_file():
            raise RunError(f"{self.root} has no spec.resolved.yaml: not a synthscene run folder")
        try:
            data = load_yaml(spec_file)
        except SpecError as err:
            raise RunError(str(err)) from None
        self.spec = validate_spec(_without_foreign_sections(data), str(spec_file))
        view_file = self.root / VIEW
        self.view = json.loads(view_file.read_text()) if view_file.is_file() else None

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @cached_property
    def provenance(self) -> dict:
        path = self.root / "run.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def manifest_rows(self) -> list[dict]:
        path = self.root / "manifest.jsonl"
        if not path.is_file():
            raise RunError(f"{path} does not exist: the run was never planned")
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RunError(f"{path} line {number} is not valid JSON ({err.msg}): the manifest is damaged") from None
        return rows

    def tasks(self) -> list:
        """The manifest's tasks, as the method's task objects."""
        from synthscene.methods import method_module

        task_class = method_module(self.spec.method).Task
        return [task_class.from_json(row) for row in self.manifest_rows()]

    @property
    def num_shards(self) -> int:
        """Shards the finished run holds."""
        if self.view is not None:
            return int(self.view["shards"])
        return len(shard_ranges(self.spec.num_samples, self.spec.shard_size))

    def shards_done(self) -> int:
        return sum(shard_is_done(self.root, n) for n in range(self.num_shards))

    def completeness(self, allow_partial: bool = False) -> dict:
        """``{"shards_done", "shards", "complete"}``; an unfinished run (killed, or still
        being made) is refused with how to finish it, unless ``allow_partial``."""
        done, total = self.shards_done(), self.num_shards
        if done < total and not allow_partial:
            raise RunError(f"{self.root} is not finished: {done} of {total} shards done (finish it with synthscene "
                           f"generate --spec {self.root / 'spec.resolved.yaml'} --out {self.root} --resume, "
                           "or pass --allow-partial)")
        return {"shards_done": done, "shards": total, "complete": done == total}

    def shard_folders(self) -> list[Path]:
        folder = self.root / SHARDS
        if not folder.is_dir():
            raise RunError(f"{self.root} has no {SHARDS}/ folder: no shard was finished")
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))

    def records(self) -> Iterator[tuple[Path, dict]]:
        """(shard folder, raw record) of every finished shard, in shard order."""
        for shard in self.shard_folders():
            yield from self._shard_records(shard)

    @staticmethod
    def _shard_records(shard: Path) -> Iterator[tuple[Path, dict]]:
        path = shard / RECORDS
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                yield shard, json.loads(line)
            except json.JSONDecodeError as err:
                raise RunError(f"{path} line {number} is not valid JSON ({err.msg})") from None

    def items(self) -> Iterator[tuple[Sample, SampleFiles]]:
        """Every stored sample with the paths of its files."""
        for shard in self.shard_folders():
            yield from self.shard_items(shard)

    def shard_items(self, shard: Path) -> Iterator[tuple[Sample, SampleFiles]]:
        """The samples of one shard folder with the paths of their files."""
        images = shard
        if self.view is not None and not self.view.get("images_copied"):
            images = Path(self.view["source"]) / SHARDS / shard.name
        for _, record in self._shard_records(shard):
            semantic = record_path(shard, record["semantic"]) if record.get("semantic") else None
            image = record_path(images, record["image"])
            yield _read_sample(record, image, semantic, _parts_file(record, shard)), SampleFiles(image, semantic)

    def samples(self) -> Iterator[Sample]:
        for sample, _ in self.items():
            yield sample


def _without_foreign_sections(data):
    """Runs written before the spec became one model per method resolved every method's
    section; what does not belong to the run's own method is dropped when reading them."""
    if not isinstance(data, dict):
        return data
    foreign = {"text2labels": ("mosaic",),
               "mosaic": ("text2labels", "objects_per_prompt", "prompt_templates")}.get(data.get("method"), ())
    return {k: v for k, v in data.items() if k not in foreign}


def open_run(path: str | Path) -> Run:
    """Open a run folder written by ``synthscene generate --spec``."""
    return Run(path)
