"""Does a generator draw what its prompt names, and only that? Scored with the oracle."""

from __future__ import annotations

import re

import numpy as np
import torch
from tqdm import tqdm

from synthscene.plan import sample_generator, sample_seed
from synthscene.world.classes import CLASSES, part_ids
from synthscene.world.oracle import oracle_parts, oracle_semantic, present_classes


def named_classes(prompt: str) -> set[int]:
    """Class ids whose name or plural occurs in a prompt as a whole word."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    return {i for i, c in enumerate(CLASSES) if c.name in words or c.plural in words}


def score_presence(pipe, prompts: list[str], steps: int = 25, guidance: float = 7.5, seed: int = 0,
                   batch_size: int = 16, progress: bool = True) -> dict:
    """Generate one image per prompt and check it with the oracle.

    Returns a dict with ``named_present`` (share of (image, named class) pairs whose class
    the oracle finds), ``unnamed_present`` (share of (image, unnamed class) pairs found
    anyway), ``all_named_present`` (share of images with every named class), counts, and
    ``dark_part_share``: per part-aware class, the share of its pixels in its dark part
    (does the model draw the parts?).
    """
    named_hits = named_total = unnamed_hits = unnamed_total = complete = 0
    part_pixels = dark_share_counts()
    for start in tqdm(range(0, len(prompts), batch_size), desc="presence", disable=not progress):
        batch = prompts[start : start + batch_size]
        generators = [sample_generator(sample_seed(seed, start + i)) for i in range(len(batch))]
        with torch.no_grad():
            images = pipe(batch, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                          output_type="np").images
        for prompt, image in zip(batch, images):
            image = (image * 255).round().astype(np.uint8)
            labels = oracle_semantic(image)
            found = present_classes(labels)
            count_dark_parts(part_pixels, labels, oracle_parts(image, labels))
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
        "dark_part_share": dark_shares(part_pixels),
    }


def dark_share_counts() -> dict[int, list[int]]:
    """Per part-aware class id: [pixels in its dark part, pixels of the class]."""
    return {c: [0, 0] for c in range(len(CLASSES)) if part_ids(c)}


def count_dark_parts(counts: dict[int, list[int]], semantic: np.ndarray, parts: np.ndarray) -> None:
    for class_id, row in counts.items():
        row[0] += int((parts == part_ids(class_id)[1]).sum())
        row[1] += int((semantic == class_id + 1).sum())


def dark_shares(counts: dict[int, list[int]]) -> dict[str, float]:
    return {CLASSES[c].name: round(dark / max(1, total), 4) for c, (dark, total) in counts.items()}
