"""Per-sample seeds: a sample's randomness depends only on (run seed, sample index),
never on batch size, worker count or which samples ran before it.

A sample draws from several independent streams (its noise, the mosaic layout, the
diffusion classifier's noise), each derived from the sample's seed and the stream's
number below. The numbers are part of the data: changing one changes every dataset.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """The named random streams of one sample (the initial noise uses the sample seed itself)."""

    CLASSIFIER_NOISE = 1  # text2labels 'ours': noise of the diffusion classifier
    LAYOUT = 2  # mosaic: the jittered region layout
    STYLE = 3  # restyle: which style prompt each instance gets
    CROP = 4  # restyle: the focused crop's window


def sample_seed(run_seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``run_seed``."""
    if run_seed < 0 or index < 0:
        raise ValueError(f"seeds and indices must be >= 0, got run_seed={run_seed}, index={index}")
    state = np.random.SeedSequence([run_seed, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def stream_seed(seed: int, stream: Stream) -> int:
    """The seed of one named stream of the sample seeded with ``seed``."""
    return sample_seed(seed, int(stream))


def stream_rng(seed: int, stream: Stream) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, stream))


def sample_generator(seed: int, device="cpu"):
    """A torch generator seeded with ``seed`` (noise is drawn on the CPU by default, so a
    sample's pixels do not depend on the device that denoises it)."""
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def shard_ranges(count: int, shard_size: int) -> list[range]:
    """Task positions of each shard: ``shard_size`` consecutive tasks each, the last shorter."""
    return [range(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def list_objects(words: list[str]) -> str:
    """A prompt's object phrase: ["ball", "leaf", "egg"] -> "a ball, a leaf and an egg"."""
    phrases = [("an " if w[0].lower() in "aeiou" else "a ") + w for w in words]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
