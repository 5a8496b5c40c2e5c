"""Filesystem helpers: outputs appear whole or not at all.

- ``atomic_output_dir``: a whole output folder, renamed into place when complete.
- ``write_bytes`` / ``write_text`` / ``write_json`` / ``write_jsonl``: one file, through a temporary file and
  an atomic rename.
- ``replace_dir``: move a finished temporary folder over its final name.
- ``refuse_nonempty_output``: the one check (and message) for an output that already holds files.
- ``naming_write_errors``: an OS error while writing (a full disk) names the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


class OutputExistsError(FileExistsError):
    pass


class WriteError(OSError):
    """An OS error while writing, with the path it happened to (``str`` is the message)."""

    def __str__(self) -> str:
        return self.strerror


@contextlib.contextmanager
def naming_write_errors(path: str | Path):
    """Give an OS error raised while writing under ``path`` that path: a full disk or a
    quota says only "No space left on device", without the file it happened to."""
    try:
        yield
    except OSError as err:
        if err.filename or isinstance(err, (FileExistsError, WriteError)):
            raise
        raise WriteError(err.errno, f"cannot write {path}: {err.strerror or err}") from None


def refuse_nonempty_output(path: str | Path, hint: str = "use --overwrite") -> None:
    """Raise ``OutputExistsError`` when ``path`` exists and is a file or a non-empty folder."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OutputExistsError(f"output folder {path} already exists and is not empty ({hint})")


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` with one clear message when the parent cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot write to {path}: {err.strerror}") from err
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success and
    remove it on any error, so a failed run leaves no partial output.

    An existing non-empty ``path`` is an error unless ``overwrite`` (it is then replaced
    only after the new output is complete).
    """
    path = Path(path)
    if not overwrite:
        refuse_nonempty_output(path)
    make_dir(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the output gets the user's usual mode
    except OSError as err:
        raise PermissionError(f"cannot write to {path.parent}: {err.strerror}") from err
    try:
        with naming_write_errors(path):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` at ``final``, replacing what was there."""
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with naming_write_errors(path):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file and an atomic rename."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = None, sort_keys: bool = False) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))


def write_jsonl(path: str | Path, rows, sort_keys: bool = False) -> None:
    write_text(path, "".join(json.dumps(row, sort_keys=sort_keys) + "\n" for row in rows))
