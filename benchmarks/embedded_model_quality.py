"""Does the embedded shapes model draw the classes a prompt names, and only those?

Prompts are the captions of a fresh shapes-world validation split (scenes with 1-4
objects); each image is labelled by the world's colour oracle.

    .venv/bin/python benchmarks/embedded_model_quality.py [--model embedded] [--images 240] [--grid PNG]

Last line: JSON with named_present (goal >= 0.9), unnamed_present (goal < 0.1), and
dark_part_share per part-aware class beside ``world_dark_part_share``, the same share on
the real scenes the prompts come from (a model that draws the parts comes close to it).
``--grid`` also writes the model card's sample grid: one row per prompt of
examples/shapes-prompts.txt, seeds 0-7, images enlarged 4x.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from synthscene.models.families import family_of
from synthscene.models.load import load_pipeline
from synthscene.world.presence import count_dark_parts, dark_share_counts, dark_shares, named_classes, score_presence
from synthscene.world.render import render_scene

GRID_PROMPTS = Path(__file__).resolve().parents[1] / "examples" / "shapes-prompts.txt"


def world_scenes(count: int, seed: int) -> list:
    """The first ``count`` scenes of a fresh validation split that name a class."""
    scenes, index = [], 0
    while len(scenes) < count:
        scene = render_scene(seed, 20_000_000 + index)
        index += 1
        if named_classes(scene.caption):
            scenes.append(scene)
    return scenes



def sample_grid(pipe, prompts: list[str], seeds: int, steps: int, guidance: float, zoom: int = 4,
                gap: int = 2) -> np.ndarray:
    """uint8 RGB grid, a row per prompt, a column per seed 0..seeds-1, framed by white gaps."""
    rows = []
    for prompt in prompts:
        images = pipe([prompt] * seeds, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                      generator=[torch.Generator().manual_seed(s) for s in range(seeds)]).images
        rows.append([(im * 255).round().astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1) for im in images])
    side = rows[0][0].shape[0] + gap
    grid = np.full((len(rows) * side + gap, seeds * side + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            grid[gap + i * side: (i + 1) * side, gap + j * side: (j + 1) * side] = tile
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--grid", type=Path, default=None, help="also write the sample grid PNG here")
    args = parser.parse_args()
    started = time.perf_counter()
    # a pipeline call with what its family needs (SD3 / FLUX: the T5 length the model reads)
    model = load_pipeline(args.model)
    pipe = functools.partial(model, **family_of(model).pipeline_kwargs())
    if args.grid is not None:
        prompts = [p.strip() for p in GRID_PROMPTS.read_text().splitlines() if p.strip()]
        grid = sample_grid(pipe, prompts, seeds=8, steps=args.steps, guidance=args.guidance)
        _, png = cv2.imencode(".png", grid[..., ::-1])
        tmp = args.grid.with_name(f".{args.grid.name}.tmp")
        tmp.write_bytes(png.tobytes())
        tmp.replace(args.grid)
    scenes = world_scenes(args.images, args.seed)
    result = score_presence(pipe, [scene.caption for scene in scenes], steps=args.steps,
                            guidance=args.guidance, seed=args.seed)
    real = dark_share_counts()
    for scene in scenes:
        count_dark_parts(real, scene.semantic, scene.parts)
    result["world_dark_part_share"] = dark_shares(real)
    result.update(model=args.model, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
