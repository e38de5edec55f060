"""Atomic file and directory writes: a reader sees the old content or the new, never a torn one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from reasonlab.errors import WriteFailed


def write_cause(exc: BaseException) -> str | None:
    """Why a write failed, in the OS's one-line words; None where `exc` is not a failed write.

    safetensors raises its own SafetensorError for an I/O failure, with the OS's error number in
    its text ("I/O error: No space left on device (os error 28)").
    """
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        return text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, SafetensorError):
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found:
            return os.strerror(int(found.group(1)))
    return None


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn any failure to write `path` (an OSError, or safetensors' own error for one) into
    WriteFailed naming it and the cause."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as exc:
        cause = write_cause(exc)
        if cause is None:
            raise
        raise WriteFailed(f"cannot write {path}: {cause}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_replace_dir(target: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with `fill(tmp_dir)` beside `target`, then swap it in.

    The old directory is moved aside before the new one is renamed into place and removed after,
    so a crash leaves either a complete old or a complete new directory (see `resolve_dir`).
    """
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.parent / f".{target.name}.old"
        if not target.exists() and old.exists():  # a crash mid-swap left the complete copy aside
            os.replace(old, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            fill(tmp)
            for child in tmp.iterdir():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if old.exists():
                shutil.rmtree(old)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_dir(target: str | Path) -> Path:
    """The complete copy of a directory written by `atomic_replace_dir`, even after a crash mid-swap."""
    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.exists():
        return old
    return target
