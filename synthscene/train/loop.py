"""Pieces every plain training loop here shares: the learning-rate schedule, checkpoints
written atomically and read back with ``weights_only=True``, and a step log that a resumed
run cuts back to its checkpoint."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch

from synthscene.io import write_bytes, write_text
from synthscene.plan import sample_seed


def warmup_cosine(base: float, step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int) -> int:
    """The global torch seed of training step ``step``: a function of (seed, step) only, so
    whatever the libraries draw from the global generator repeats after a resume."""
    return sample_seed(seed, step)


def save_checkpoint(folder: Path, step: int, state: dict) -> Path:
    """``folder/step-NNNNNNN.pt`` holding ``state`` and its step, replaced atomically."""
    path = Path(folder) / f"step-{step:07d}.pt"
    buffer = io.BytesIO()  # serialised first: torch's own file writer reports a full disk without the path
    torch.save({"step": step, **state}, buffer)
    write_bytes(path, buffer.getvalue())
    return path


def load_latest_checkpoint(folder: Path) -> dict | None:
    """The newest checkpoint of ``folder`` (tensors and plain values only), or None."""
    checkpoints = sorted(Path(folder).glob("step-*.pt"))
    if not checkpoints:
        return None
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)


def truncate_log(path: Path, before_step: int) -> None:
    """Keep the JSON-lines rows of ``path`` whose ``step`` is below ``before_step``: a run
    resumed from a checkpoint re-does (and re-logs) the steps after it."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):  # a line cut short by a kill mid-write
                break
            raise ValueError(f"{path} line {number} is not a step record: the log is damaged") from None
        if step < before_step:
            rows.append(line)
    write_text(path, "".join(r + "\n" for r in rows))
