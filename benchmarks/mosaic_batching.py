"""Per-step time of a 4-region mosaic canvas: all regions in one UNet call / one after another.

    .venv/bin/python benchmarks/mosaic_batching.py [--steps 10] [--repeats 3] [--device cuda] [--sd15-geometry]

Same model (the embedded one; ``--sd15-geometry``: a UNet of SD 1.5's size with random
weights, 512 px windows), layout, prompts and seed; the two modes alternate and each
figure is the fastest of ``--repeats``. Key ``ratio`` = batched / sequential; goal <= 0.5.
``max_pixel_difference`` checks that both modes make the same image.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sd15_geometry import sd15_geometry_pipeline

from synthscene.methods.mosaic import generate_mosaic, plan_layout
from synthscene.models.info import pipeline_info
from synthscene.models.load import load_pipeline
from synthscene.spec import MosaicSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sd15-geometry", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe = sd15_geometry_pipeline().to(args.device) if args.sd15_geometry else load_pipeline("embedded", device=args.device)
    layout = plan_layout(MosaicSpec(grid=(2, 2)), pipeline_info(pipe), np.random.default_rng(0))
    prompts = ["a photo of a ball", "a photo of a leaf", "a photo of a box", "a photo of a star"]
    seconds = {True: [], False: []}
    images = {}
    for _ in range(args.repeats + 1):  # the first round warms up
        for batched in (True, False):
            started = time.perf_counter()
            result = generate_mosaic(pipe, prompts, layout, args.steps, 7.5, torch.Generator().manual_seed(0), batched)
            seconds[batched].append((time.perf_counter() - started) / args.steps)
            images[batched] = result.image.astype(np.int16)
    batched, sequential = min(seconds[True][1:]), min(seconds[False][1:])
    print(json.dumps({"ratio": round(batched / sequential, 4), "batched_step_s": round(batched, 4),
                      "sequential_step_s": round(sequential, 4), "goal_ratio": 0.5,
                      "max_pixel_difference": int(np.abs(images[True] - images[False]).max()),
                      "canvas": list(layout.canvas), "window": list(layout.window), "steps": args.steps,
                      "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                      "model": "sd1.5 geometry (random weights)" if args.sd15_geometry else "embedded"}))


if __name__ == "__main__":
    main()
