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


def open_run_folder(out: Path, config: dict, resume: bool, may_change: tuple[str, ...] = ()) -> None:
    """Check a run folder before anything is written: a resumed run must have been started
    with ``config`` (its ``config.json``; the settings in ``may_change`` aside, which
    ``config.json`` then takes from ``config``), a new one needs an empty or missing folder."""
    from synthscene.io import refuse_nonempty_output

    out = Path(out)
    if not resume:
        refuse_nonempty_output(out, "use --resume to continue it, or another --out")
        return
    saved = out / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{out} has no config.json: nothing to resume")
    started = json.loads(saved.read_text())
    if {k: v for k, v in started.items() if k not in may_change} != {k: v for k, v in config.items()
                                                                      if k not in may_change}:
        raise ValueError(f"{out} was started with other settings (see its config.json); resume it with those")
    if started != config:
        write_text(saved, json.dumps(config, indent=2))


def resume_state(out: Path, modules: dict, log_name: str = "train_log.jsonl") -> int:
    """Load the newest checkpoint of ``out/checkpoints`` into ``modules`` (name in the
    checkpoint -> object with ``load_state_dict``), cut the step log back to it, and return
    its step; 0 (and an empty log) when there is none."""
    state = load_latest_checkpoint(Path(out) / "checkpoints")
    if state is None:  # killed before the first checkpoint: start over, and so does the log
        truncate_log(Path(out) / log_name, 0)
        return 0
    for name, module in modules.items():
        module.load_state_dict(state[name])
    truncate_log(Path(out) / log_name, state["step"])
    return int(state["step"])


def optimizer_step(optimizer, loss: torch.Tensor, parameters, learning_rate: float, clip: float | None = 1.0) -> None:
    """Set the learning rate, back-propagate ``loss``, clip the gradient norm, step."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()
