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
    inst = sample.instances
    fields = [name for name, values in inst.data.items() if np.asarray(values).ndim == 1
              and np.asarray(values).dtype.kind == "f"]
    boxes, rows = [], []
    for k in range(len(inst)):
        x1, y1, x2, y2 = (float(v) * _SCALE for v in inst.xyxy[k])
        class_id, score = int(inst.class_id[k]), float(inst.score[k])
        colour = _hex(class_id + 1)
        label = f"{names[class_id]} {score:.2f}"
        keys = f'data-class="{class_id}" data-score="{score:.4f}"'
        boxes.append(f'<rect {keys} x="{x1}" y="{y1}" width="{x2 - x1}" height="{y2 - y1}" stroke="{colour}" '
                     f'fill="none" stroke-width="2"><title>{html.escape(label)}</title></rect>')
        checks = "".join(f"<td>{_number(inst.data[name][k])}</td>" for name in fields)
        rows.append(f'<tr class="instance" {keys}><td>{html.escape(names[class_id])}</td><td>{score:.2f}</td>'
                    f"<td>{int(inst.area[k])}</td>{checks}</tr>")
    table = "no instances"
    if rows:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in ["class", "score", "area", *fields])
        table = f'<table class="scores"><tr>{head}</tr>{"".join(rows)}</table>'
    ignored = 0.0 if sample.semantic is None else float((sample.semantic == IGNORE_INDEX).mean())
    return (
        f'<figure class="sample"><div class="pair">'
        f'<img src="{stem}.png" width="{w}" height="{h}" alt="generated image">'
        f'<div class="boxed"><img src="{stem}-overlay.png" width="{w}" height="{h}" alt="labels">'
        f'<svg width="{w}" height="{h}">{"".join(boxes)}</svg></div></div>'
        f"<figcaption><b>{html.escape(sample.caption)}</b><br>seed {sample.seed} &middot; "
        f"uncertain {ignored:.0%}{table}</figcaption></figure>"
    )


def _number(value) -> str:
    value = float(value)
    return "&ndash;" if value != value else f"{value:.2f}"


# Filters: a class and a lowest score. Instances that fail are hidden (boxes and score rows),
# and so is a sample with no instance left; the choice is kept in the address
# (#class=K&min_score=S), so a filtered view can be linked to.
_SCRIPT = """
const classFilter = document.getElementById("class-filter");
const scoreFilter = document.getElementById("min-score");
const scoreShown = document.getElementById("min-score-value");
function apply() {
  const cls = classFilter.value, low = parseFloat(scoreFilter.value);
  scoreShown.textContent = low.toFixed(2);
  let shown = 0;
  for (const sample of document.querySelectorAll("figure.sample")) {
    let kept = 0;
    for (const item of sample.querySelectorAll("[data-score]")) {
      const ok = parseFloat(item.dataset.score) >= low && (cls === "" || item.dataset.class === cls);
      item.style.display = ok ? "" : "none";
      if (ok && item.tagName === "TR") kept += 1;
    }
    const visible = kept > 0 || (cls === "" && low <= 0);
    sample.style.display = visible ? "" : "none";
    shown += visible;
  }
  document.getElementById("shown").textContent = shown;
  history.replaceState(null, "", "#class=" + encodeURIComponent(cls) + "&min_score=" + low);
}
const wanted = new URLSearchParams(location.hash.slice(1));
if (wanted.has("class")) classFilter.value = wanted.get("class");
if (wanted.has("min_score")) scoreFilter.value = wanted.get("min_score");
classFilter.addEventListener("change", apply);
scoreFilter.addEventListener("input", apply);
apply();
"""


def _page(title: str, cards: list[str], names: list[str], note: str = "") -> str:
    legend = "".join(f'<span><i style="background:{_hex(i + 1)}"></i>{html.escape(n)}</span>'
                     for i, n in enumerate(names))
    options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(names))
    controls = (f'<p class="controls"><label>class <select id="class-filter"><option value="">all</option>{options}'
                '</select></label> <label>lowest score <input id="min-score" type="range" min="0" max="1" '
                'step="0.01" value="0"> <output id="min-score-value">0.00</output></label> '
                f'&middot; <span id="shown">{len(cards)}</span> of {len(cards)} samples shown</p>')
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
figcaption {{ font-size: 12px; max-width: 520px; margin-top: 4px; }}
.scores {{ border-collapse: collapse; margin-top: 4px; }} .scores td, .scores th {{ padding: 0 6px; text-align: right; }}
.legend span {{ margin-right: 12px; }} .legend i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>{f'<p class="note">{html.escape(note)}</p>' if note else ""}<p class="legend">{legend}</p>
{controls}
<div class="grid">{"".join(cards)}</div>
<script>{_SCRIPT}</script>
</body></html>
"""
