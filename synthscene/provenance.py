"""What a run records beside its outputs: resolved config, model, versions."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata

_PACKAGES = ("synthscene", "torch", "torchvision", "diffusers", "transformers", "numpy", "pycocotools",
             "faster-coco-eval", "opencv-contrib-python-headless")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_record(config: dict, model: dict | None = None, **extra) -> dict:
    """A JSON-ready record of a run: its resolved config, model fingerprint, versions (and
    ``extra`` fields, e.g. where it ran)."""
    return {
        "config": config,
        "model": model,
        **extra,
        "versions": package_versions(),
        "python": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
