"""Small helpers shared by the tests."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

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


def write_cityscapes_files(root, split, city, stem, image, label_ids, instance_ids):
    images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(images / f"{stem}_leftImg8bit.png")
    Image.fromarray(label_ids).save(labels / f"{stem}_gtFine_labelIds.png")
    cv2.imwrite(str(labels / f"{stem}_gtFine_instanceIds.png"), instance_ids.astype(np.uint16))


def write_street(root, split="train", city="aachen", stem="aachen_000000_000019", height=24, width=48):
    """A small street in Cityscapes' own ids: road, sky, two cars, a car group, a caravan."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label_ids = np.full((height, width), 7, np.uint8)  # road
    label_ids[:6] = 23  # sky
    label_ids[6:8, :] = 0  # unlabeled
    instance_ids = label_ids.astype(np.int64)
    label_ids[10:16, 2:10] = 26  # a car, k = 0
    instance_ids[10:16, 2:10] = 26000
    label_ids[10:18, 20:30] = 26  # another car, k = 2 (ids need not be consecutive)
    instance_ids[10:18, 20:30] = 26002
    label_ids[18:22, 32:46] = 26  # a group of cars: label id only
    instance_ids[18:22, 32:46] = 26
    label_ids[8:12, 36:44] = 29  # a caravan (an ignored thing class)
    instance_ids[8:12, 36:44] = 29000
    write_cityscapes_files(root, split, city, stem, image, label_ids, instance_ids)
    return image, label_ids, instance_ids
