"""Atomic file and directory writes, so a crash never leaves a half-written checkpoint in place."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pg2edge.errors import CheckpointError


def _sibling(path: Path) -> Path:
    """A fresh hidden name next to `path` (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write to a temp file beside `path`, fsync, then `os.replace` it into place."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: parent directory {path.parent} does not exist")
    tmp = _sibling(path)
    try:
        with open(tmp, "xb") as f:  # "x": respects umask, never clobbers
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a temp directory beside `path`, then rename it to `path` (absent or empty)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CheckpointError(f"{path}: expected a new or empty directory, found an existing "
                              f"{'directory with files' if path.is_dir() else 'file'}; refusing to overwrite")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: parent directory {path.parent} does not exist")
    tmp = _sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, path)  # rename(2) may replace an empty directory
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
