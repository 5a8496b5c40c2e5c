"""Filesystem helpers: outputs appear whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


class OutputExistsError(FileExistsError):
    pass


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success and
    remove it on any error, so a failed run leaves no partial output.

    An existing non-empty ``path`` is an error unless ``overwrite`` (it is then replaced
    only after the new output is complete).
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise OutputExistsError(f"output folder {path} already exists and is not empty (use --overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise PermissionError(f"cannot write to {path.parent}: {err.strerror}") from err
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


def write_json(path: str | Path, obj, indent: int | None = None) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)


def write_jsonl(path: str | Path, rows) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
