"""Does the embedded shapes model draw the classes a prompt names, and only those?

Prompts are the captions of a fresh shapes-world validation split (scenes with 1-4
objects); each image is labelled by the world's colour oracle.

    .venv/bin/python benchmarks/embedded_model_quality.py [--model embedded] [--images 240]

Last line: JSON with named_present (goal >= 0.9), unnamed_present (goal < 0.1).
"""

from __future__ import annotations

import argparse
import json
import time

from synthscene.models.load import load_pipeline
from synthscene.world.presence import named_classes, score_presence
from synthscene.world.render import render_scene


def world_prompts(count: int, seed: int) -> list[str]:
    prompts, index = [], 0
    while len(prompts) < count:
        caption = render_scene(seed, 20_000_000 + index).caption
        index += 1
        if named_classes(caption):
            prompts.append(caption)
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    result = score_presence(pipe, world_prompts(args.images, args.seed), steps=args.steps,
                            guidance=args.guidance, seed=args.seed)
    result.update(model=args.model, steps=args.steps, guidance=args.guidance, seed=args.seed,
                  seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
