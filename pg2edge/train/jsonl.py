"""Training examples from JSONL: `{"image": path relative to the file, "prefix": str, "suffix": str}` per line.

A stand-in for `pg2edge.tasks.jsonl.read_examples` (same signature and
error contract), kept until the task suite lands; `pg2edge.train.data` is the
only caller, so swapping the import there is the whole reconciliation.
Every bad line is a one-line `DataError` naming file and line, because a
silent skip changes what a model is trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pg2edge.errors import Pg2EdgeError

_TEXT_FIELDS = ("prefix", "suffix")


class DataError(Pg2EdgeError):
    """A JSONL training file is missing, empty or has a malformed line."""


@dataclass(frozen=True)
class Example:
    """One (image, prefix, suffix) triple; `line` is where it came from, for error messages."""

    image: Path
    prefix: str
    suffix: str
    line: int = 0


def _parse(raw: str, where: str, base: Path) -> Example:
    """One JSONL line -> Example, or DataError saying what is wrong with it."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(doc).__name__}")
    image = doc.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: expected \"image\" to be a non-empty path string, found {image!r}")
    for key in _TEXT_FIELDS:
        if not isinstance(doc.get(key), str):
            raise DataError(f"{where}: expected \"{key}\" to be a string, found {doc.get(key)!r}")
    path = base / image
    if not path.is_file():
        raise DataError(f"{where}: image {image!r} not found (looked for {path})")
    return Example(image=path, prefix=doc["prefix"], suffix=doc["suffix"], line=int(where.rsplit(":", 1)[1]))


def read_examples(path: str | os.PathLike, skip_bad: bool = False,
                  skipped: list[str] | None = None) -> list[Example]:
    """All examples of a JSONL file; with `skip_bad`, bad lines are dropped and their errors appended to `skipped`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read data file ({e})") from None
    examples: list[Example] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            examples.append(_parse(raw, f"{path}:{number}", path.parent))
        except DataError as e:
            if not skip_bad:
                raise
            if skipped is not None:
                skipped.append(str(e))
    if not examples:
        raise DataError(f"{path}: no usable examples" + (f" ({len(skipped)} bad lines skipped)" if skipped else ""))
    return examples
