"""Does a generator draw what its prompt names, and only that? Scored with the oracle."""

from __future__ import annotations

import re

import numpy as np
import torch
from tqdm import tqdm

from synthscene.plan import sample_generator, sample_seed
from synthscene.world.classes import CLASSES
from synthscene.world.oracle import oracle_semantic, present_classes


def named_classes(prompt: str) -> set[int]:
    """Class ids whose name or plural occurs in a prompt as a whole word."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    return {i for i, c in enumerate(CLASSES) if c.name in words or c.plural in words}


def score_presence(pipe, prompts: list[str], steps: int = 25, guidance: float = 7.5, seed: int = 0,
                   batch_size: int = 16, progress: bool = True) -> dict:
    """Generate one image per prompt and check it with the oracle.

    Returns a dict with ``named_present`` (share of (image, named class) pairs whose class
    the oracle finds), ``unnamed_present`` (share of (image, unnamed class) pairs found
    anyway), ``all_named_present`` (share of images with every named class) and counts.
    """
    named_hits = named_total = unnamed_hits = unnamed_total = complete = 0
    for start in tqdm(range(0, len(prompts), batch_size), desc="presence", disable=not progress):
        batch = prompts[start : start + batch_size]
        generators = [sample_generator(sample_seed(seed, start + i)) for i in range(len(batch))]
        with torch.no_grad():
            images = pipe(batch, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                          output_type="np").images
        for prompt, image in zip(batch, images):
            found = present_classes(oracle_semantic((image * 255).round().astype(np.uint8)))
            named = named_classes(prompt)
            named_hits += len(named & found)
            named_total += len(named)
            unnamed_hits += len(found - named)
            unnamed_total += len(CLASSES) - len(named)
            complete += named <= found
    return {
        "images": len(prompts),
        "named_present": named_hits / max(1, named_total),
        "unnamed_present": unnamed_hits / max(1, unnamed_total),
        "all_named_present": complete / max(1, len(prompts)),
        "named_pairs": named_total,
        "unnamed_pairs": unnamed_total,
    }
