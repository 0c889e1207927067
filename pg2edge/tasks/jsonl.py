"""Read a suite JSONL file for training: each line one example, every bad line named by file and line number.

A line must be UTF-8 JSON object with `image` (a path relative to the JSONL's
directory, which must exist), `prefix` (a string) and a non-empty `suffix`, each
text at most `max_chars` long; an optional `task` string is kept. Blank lines are
ignored. A bad line raises `DataError` ("<file>:<line>: <why>"), or with
`skip_bad=True` is skipped and counted, so one corrupt line cannot stop a long run
silently or loudly by surprise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pg2edge.tasks.errors import DataError

DEFAULT_MAX_CHARS = 1000


@dataclass(frozen=True)
class Example:
    """One training example: image file (resolved against the JSONL's directory), prompt and target.

    `line` is where it came from, so a later failure (an undecodable image) can name file and line.
    """

    image: Path
    prefix: str
    suffix: str
    task: str | None = None
    line: int = 0


@dataclass(frozen=True)
class ReadResult:
    """The good examples in file order, how many bad lines were skipped, and why each was bad."""

    examples: tuple[Example, ...]
    skipped: int
    problems: tuple[str, ...] = ()


class _BadLine(Exception):
    """Why one line is unusable (private: becomes a DataError or a skip)."""


def _decode(raw: bytes, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    return text.removeprefix("\ufeff") if lineno == 1 else text


def _text_field(row: dict, key: str, max_chars: int, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "missing" if key not in row else f"expected a string, found {type(value).__name__}"
        raise _BadLine(f"{key!r}: {what}")
    if len(value) > max_chars:
        raise _BadLine(f"{key!r}: {len(value)} characters, more than max_chars={max_chars}")
    return value


def _parse(text: str, lineno: int, base: Path, max_chars: int, exists: dict[Path, bool]) -> Example:
    """One non-blank line -> Example, or _BadLine saying why not."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadLine(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise _BadLine(f"expected a JSON object, found {type(row).__name__}")
    image_rel = _text_field(row, "image", max_chars)
    prefix = _text_field(row, "prefix", max_chars)
    suffix = _text_field(row, "suffix", max_chars)
    task = _text_field(row, "task", max_chars, required=False)
    if not image_rel:
        raise _BadLine("'image': empty path")
    if not suffix:
        raise _BadLine("'suffix': empty target")
    image = base / image_rel
    if image not in exists:
        exists[image] = image.is_file()
    if not exists[image]:
        raise _BadLine(f"image {image_rel!r} not found (relative to {base})")
    return Example(image, prefix, suffix, task, lineno)


def read_examples(path: str | os.PathLike, skip_bad: bool = False,
                  max_chars: int = DEFAULT_MAX_CHARS) -> ReadResult:
    """Every example of a JSONL file; a bad line raises DataError naming file and line, or is skipped."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    base = path.parent
    exists: dict[Path, bool] = {}
    examples: list[Example] = []
    problems: list[str] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            examples.append(_parse(_decode(raw, lineno), lineno, base, max_chars, exists))
        except _BadLine as why:
            message = f"{path}:{lineno}: {why}"
            if not skip_bad:
                raise DataError(message) from None
            problems.append(message)
    return ReadResult(tuple(examples), len(problems), tuple(problems))
