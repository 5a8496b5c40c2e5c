"""Small helpers shared by the tests."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from synthscene.engine import Execution, run_spec

# the shapes world's open-vocabulary split used by the grounding tests
BASE, NOVEL = ("ball", "leaf", "box", "hat"), ("star", "ring")


def make_run(spec, out, resume: bool = False, device: str = "cpu", progress: bool = False, **execution) -> Path:
    """Run ``spec`` into ``out`` on the local backend (or as ``execution`` says), quietly."""
    return run_spec(spec, out, resume=resume, execution=Execution(device=device, **execution), progress=False).out


def shard_digest(root: Path) -> str:
    """One hash over every file of a run's shards (paths and bytes)."""
    digest = hashlib.sha256()
    for path in sorted((Path(root) / "shards").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def crash_after_checkpoint(monkeypatch, module, step: int) -> None:
    """Make ``module._save_checkpoint`` raise right after writing the checkpoint of ``step``
    (a simulated crash for resume tests); ``monkeypatch.undo()`` restores it."""
    real_save = module._save_checkpoint

    def save_then_crash(out, saved_step, *args):
        real_save(out, saved_step, *args)
        if saved_step == step:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(module, "_save_checkpoint", save_then_crash)


def sigkill_when(command: list[str], ready, timeout: float = 300) -> None:
    """Start ``command``, and kill -9 it as soon as ``ready()`` holds (or it exits first)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
