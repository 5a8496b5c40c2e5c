"""Per-sample seeds: a sample's randomness depends only on (run seed, sample index),
never on batch size, worker count or which samples ran before it."""

from __future__ import annotations

import numpy as np
import torch


def sample_seed(run_seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``run_seed``."""
    if run_seed < 0 or index < 0:
        raise ValueError(f"seeds and indices must be >= 0, got run_seed={run_seed}, index={index}")
    state = np.random.SeedSequence([run_seed, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def sample_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
