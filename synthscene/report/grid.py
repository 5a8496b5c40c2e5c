"""A PNG grid of a generation run's images, one row per prompt.

    python -m synthscene.report.grid RUN_DIR OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def image_grid(images: list[np.ndarray], columns: int, scale: int = 4, pad: int = 2) -> np.ndarray:
    """uint8 [H, W, 3]: equally sized RGB images in rows of ``columns``, each upscaled
    ``scale`` times with nearest neighbour (small images stay crisp), white padding."""
    if not images:
        raise ValueError("no images to put in a grid")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    cell_h, cell_w = h * scale + pad, w * scale + pad
    grid = np.full((rows * cell_h + pad, columns * cell_w + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        big = np.kron(image, np.ones((scale, scale, 1), np.uint8))
        grid[pad + r * cell_h : pad + r * cell_h + h * scale, pad + c * cell_w : pad + c * cell_w + w * scale] = big
    return grid


def run_grid(run_dir: str | Path) -> np.ndarray:
    """The grid of a ``synthscene generate`` output folder, one row per prompt."""
    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in open(run_dir / "metadata.jsonl")]
    prompts = list(dict.fromkeys(r["text"] for r in rows))
    columns = max(sum(r["text"] == p for r in rows) for p in prompts)
    ordered = []
    for prompt in prompts:
        row = [np.array(Image.open(run_dir / r["file_name"]).convert("RGB")) for r in rows if r["text"] == prompt]
        ordered += row + [np.full_like(row[0], 255)] * (columns - len(row))
    return image_grid(ordered, columns)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m synthscene.report.grid RUN_DIR OUT.png")
    Image.fromarray(run_grid(sys.argv[1])).save(sys.argv[2])
