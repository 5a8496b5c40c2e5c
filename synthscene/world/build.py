"""Write a shapes-world dataset: images, COCO instances, VOC-style semantic PNGs, captions.

Layout of ``out``::

    world.json                      classes, seed, sizes (the resolved config)
    annotations/instances_{split}.json   COCO instances, RLE masks
    {split}/images/000000.png
    {split}/semantic/000000.png     palette PNG, 0 background, 1..C, 255 ignore
    {split}/parts/000000.png        palette PNG, 0 no part, else 1 + index into world.json "parts"
    {split}/metadata.jsonl          {"file_name": "images/000000.png", "text": caption, ...}
    cityscapes/                     with ``cityscapes=True``: both splits in the Cityscapes
                                    layout (city "world"; ``synthscene.formats.cityscapes``)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from synthscene.codecs import save_semantic_png
from synthscene.formats.cityscapes import write_cityscapes
from synthscene.formats.coco import instances_to_annotations, new_coco
from synthscene.io import atomic_output_dir, write_json, write_jsonl
from synthscene.world.classes import CLASS_NAMES, CLASSES, PARTS
from synthscene.world.render import render_scene

# Scene indices of the val split start here, so train and val never share a scene
# seed whatever their sizes.
VAL_INDEX_OFFSET = 10_000_000


def write_world(out: str | Path, n_train: int, n_val: int, seed: int = 0, size: int = 32,
                overwrite: bool = False, progress: bool = True, cityscapes: bool = False) -> Path:
    """Render ``n_train`` + ``n_val`` scenes into ``out`` (atomically: all or nothing);
    ``cityscapes`` also writes them in the Cityscapes layout."""
    if n_train < 0 or n_val < 0:
        raise ValueError(f"image counts must be >= 0, got n_train={n_train}, n_val={n_val}")
    if n_train + n_val == 0:
        raise ValueError("nothing to write: n_train and n_val are both 0")
    if not 16 <= size <= 1024:
        raise ValueError(f"image size must be in [16, 1024], got {size}")
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "annotations").mkdir()
        for split, count, offset in (("train", n_train, 0), ("val", n_val, VAL_INDEX_OFFSET)):
            _write_split(tmp, split, count, offset, seed, size, progress)
            if cityscapes:
                (tmp / "cityscapes").mkdir(exist_ok=True)
                # numbered from 0 in each split, as the split's other files are
                scenes = (replace(render_scene(seed, offset + i, size), index=i) for i in range(count))
                write_cityscapes(scenes, list(CLASS_NAMES), tmp / "cityscapes", split=split, city="world")
        write_json(tmp / "world.json", {
            "seed": seed, "size": size, "n_train": n_train, "n_val": n_val,
            "classes": [c.__dict__ for c in CLASSES], "cityscapes": cityscapes,
            "parts": [{"class": CLASSES[p.class_id].name, "name": p.name} for p in PARTS],
        }, indent=2)
    return out


def _write_split(root: Path, split: str, count: int, offset: int, seed: int, size: int, progress: bool) -> None:
    (root / split / "images").mkdir(parents=True)
    (root / split / "semantic").mkdir()
    (root / split / "parts").mkdir()
    coco = new_coco(CLASS_NAMES, f"synthscene shapes world, {split}, seed {seed}")
    captions = []
    for i in tqdm(range(count), desc=f"world {split}", disable=not progress):
        sample = render_scene(seed, offset + i, size)
        name = f"{i:06d}.png"
        Image.fromarray(sample.image).save(root / split / "images" / name)
        save_semantic_png(sample.semantic, root / split / "semantic" / name)
        save_semantic_png(sample.parts, root / split / "parts" / name)
        image_id = i + 1
        coco["images"].append({"id": image_id, "file_name": f"{split}/images/{name}", "height": size, "width": size})
        coco["annotations"] += instances_to_annotations(sample.instances, image_id, len(coco["annotations"]) + 1)
        captions.append({"file_name": f"images/{name}", "text": sample.caption, "image_id": image_id})
    write_json(root / "annotations" / f"instances_{split}.json", coco)
    write_jsonl(root / split / "metadata.jsonl", captions)
