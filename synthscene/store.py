"""Canonical sample store: shards of samples, each written whole or not at all.

Layout of a run folder::

    spec.resolved.yaml   the validated spec with every default filled in
    manifest.jsonl       one SampleTask per line, written before any sample
    run.json             model fingerprint, versions
    shards/shard-00000/  images/*.png, semantic/*.png, records.jsonl

A shard is built under a temporary name and renamed when complete, so a killed run
leaves finished shards and at most one temporary folder, which ``--resume`` replaces.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from synthscene.formats.coco import mask_to_rle, rle_to_mask
from synthscene.formats.voc import load_semantic_png, save_semantic_png
from synthscene.records import Instances, Sample

SHARDS = "shards"


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_is_done(root: Path, shard: int) -> bool:
    return (Path(root) / SHARDS / shard_name(shard) / "records.jsonl").is_file()


def sample_to_record(sample: Sample, image_file: str, semantic_file: str) -> dict:
    """The JSON record of a sample: files, prompt, seed, instances with RLE masks."""
    inst = sample.instances
    return {
        **sample.meta,
        "image": image_file,
        "semantic": semantic_file,
        "height": sample.height,
        "width": sample.width,
        "prompt": sample.caption,
        "seed": sample.seed,
        "instances": [
            {"class_id": int(inst.class_id[k]), "xyxy": [float(v) for v in inst.xyxy[k]],
             "score": round(float(inst.score[k]), 6), "area": int(inst.masks[k].sum()),
             "mask": mask_to_rle(inst.masks[k])}
            for k in range(len(inst))
        ],
    }


def write_shard(root: Path, shard: int, samples: list[Sample]) -> Path:
    """Write ``samples`` as shard number ``shard`` atomically; returns its folder."""
    final = Path(root) / SHARDS / shard_name(shard)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "semantic").mkdir()
    lines = []
    for sample in samples:
        name = f"{sample.meta['index']:07d}.png"
        Image.fromarray(sample.image).save(tmp / "images" / name)
        save_semantic_png(sample.semantic, tmp / "semantic" / name)
        lines.append(json.dumps(sample_to_record(sample, f"images/{name}", f"semantic/{name}"), sort_keys=True))
    (tmp / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def read_records(root: Path) -> Iterator[tuple[Path, dict]]:
    """(shard folder, record) of every finished shard, in shard order."""
    folder = Path(root) / SHARDS
    if not folder.is_dir():
        raise FileNotFoundError(f"{root} has no {SHARDS}/ folder: not a synthscene run")
    for shard in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        for line in (shard / "records.jsonl").read_text().splitlines():
            yield shard, json.loads(line)


def load_sample(shard: Path, record: dict) -> Sample:
    """Rebuild a ``Sample`` (image, semantic mask, instances) from a stored record."""
    image = np.array(Image.open(record_path(shard, record["image"])).convert("RGB"))
    semantic = load_semantic_png(record_path(shard, record["semantic"]))
    items = record["instances"]
    if items:
        instances = Instances(
            xyxy=np.array([i["xyxy"] for i in items], np.float32),
            masks=np.stack([rle_to_mask(i["mask"]) for i in items]),
            class_id=np.array([i["class_id"] for i in items], np.int64),
            score=np.array([i["score"] for i in items], np.float32),
        )
    else:
        instances = Instances.empty(*semantic.shape)
    return Sample(image, instances, semantic, record["prompt"], record["seed"], meta=record)


def record_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (records are untrusted)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"record path {relative!r} leaves its shard folder {root}")
    return path
