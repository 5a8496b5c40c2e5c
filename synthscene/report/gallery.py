"""A static HTML gallery of a run: image, mask overlay, boxes, prompt and scores per sample.

Everything taken from the run (prompts, class names, paths) is escaped: a prompt is
user input and must not become markup.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image

from synthscene.codecs import IGNORE_INDEX, voc_palette
from synthscene.io import atomic_output_dir
from synthscene.store import open_run

_PALETTE = np.array(voc_palette(), np.uint8).reshape(256, 3)
_SCALE = 4  # small images are shown enlarged, pixelated


def overlay(image: np.ndarray, semantic: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 [H, W, 3]: the image with class colours blended in (ignore shown in its VOC colour)."""
    colours = _PALETTE[semantic]
    labelled = (semantic != 0)[..., None]
    blended = image * (1 - alpha) + colours * alpha
    return np.where(labelled, blended, image).round().astype(np.uint8)


def write_gallery(run: str | Path, out: str | Path | None = None, limit: int | None = None,
                  allow_partial: bool = False) -> Path:
    """Write ``gallery/index.html`` (+ overlay PNGs) for a run; returns the HTML path. An
    unfinished run is refused unless ``allow_partial`` (the page then says so)."""
    opened = open_run(run)
    completeness = opened.completeness(allow_partial)
    note = ("" if completeness["complete"] else
            f"unfinished run: {completeness['shards_done']} of {completeness['shards']} shards done")
    names = opened.class_names
    out = Path(out) if out is not None else opened.root / "gallery"
    with atomic_output_dir(out, overwrite=True) as tmp:
        cards = []
        for n, sample in enumerate(opened.samples()):
            if limit is not None and n >= limit:
                break
            stem = f"{sample.index:07d}"
            Image.fromarray(sample.image).save(tmp / f"{stem}.png")
            semantic = sample.semantic if sample.semantic is not None else np.zeros(sample.image.shape[:2], np.uint8)
            Image.fromarray(overlay(sample.image, semantic)).save(tmp / f"{stem}-overlay.png")
            cards.append(_card(stem, sample, names))
        (tmp / "index.html").write_text(_page(opened.root.name, cards, names, note), encoding="utf-8")
    return out / "index.html"


def _hex(label: int) -> str:
    r, g, b = (int(v) for v in _PALETTE[label])
    return f"#{r:02x}{g:02x}{b:02x}"


def _card(stem: str, sample, names: list[str]) -> str:
    h, w = sample.height * _SCALE, sample.width * _SCALE
    boxes = []
    for k in range(len(sample.instances)):
        x1, y1, x2, y2 = (float(v) * _SCALE for v in sample.instances.xyxy[k])
        colour = _hex(sample.instances.class_id[k] + 1)
        label = f"{names[sample.instances.class_id[k]]} {sample.instances.score[k]:.2f}"
        boxes.append(f'<rect x="{x1}" y="{y1}" width="{x2 - x1}" height="{y2 - y1}" stroke="{colour}" '
                     f'fill="none" stroke-width="2"><title>{html.escape(label)}</title></rect>')
    scores = ", ".join(f"{html.escape(names[c])} {s:.2f}" for c, s in
                       zip(sample.instances.class_id, sample.instances.score)) or "no instances"
    ignored = 0.0 if sample.semantic is None else float((sample.semantic == IGNORE_INDEX).mean())
    return (
        f'<figure class="sample"><div class="pair">'
        f'<img src="{stem}.png" width="{w}" height="{h}" alt="generated image">'
        f'<div class="boxed"><img src="{stem}-overlay.png" width="{w}" height="{h}" alt="labels">'
        f'<svg width="{w}" height="{h}">{"".join(boxes)}</svg></div></div>'
        f"<figcaption><b>{html.escape(sample.caption)}</b><br>seed {sample.seed} &middot; "
        f"{scores} &middot; uncertain {ignored:.0%}</figcaption></figure>"
    )


def _page(title: str, cards: list[str], names: list[str], note: str = "") -> str:
    legend = "".join(f'<span><i style="background:{_hex(i + 1)}"></i>{html.escape(n)}</span>'
                     for i, n in enumerate(names))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthscene: {html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #fafafa; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.sample {{ margin: 0; padding: 8px; background: white; border: 1px solid #ddd; }}
.pair {{ display: flex; gap: 4px; }}
.boxed {{ position: relative; }}
.boxed svg {{ position: absolute; left: 0; top: 0; }}
img {{ image-rendering: pixelated; display: block; }}
.note {{ color: #a40000; font-weight: bold; }}
figcaption {{ font-size: 12px; max-width: 280px; margin-top: 4px; }}
.legend span {{ margin-right: 12px; }} .legend i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>{f'<p class="note">{html.escape(note)}</p>' if note else ""}<p class="legend">{legend}</p>
<div class="grid">{"".join(cards)}</div>
</body></html>
"""
