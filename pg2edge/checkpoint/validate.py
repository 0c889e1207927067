"""Checks a checkpoint against `param_layout`, so a bad file fails early with one clear line.

Every reader describes what it found as `TensorInfo` (shape + dtype, from file
headers, before any data is read) and calls these checks; every failure is a
`CheckpointError` whose message is one line naming the file, the key, and what
was expected vs found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import ml_dtypes
import numpy as np

from pg2edge.errors import CheckpointError

Shape = tuple[int, ...]

FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))
_MAX_LISTED = 3


class TensorInfo(NamedTuple):
    """What a file header says about one tensor (no data read)."""

    shape: Shape
    dtype: np.dtype


def one_line(text: str) -> str:
    """Collapse whitespace runs (newlines included) so messages stay on one line."""
    return " ".join(str(text).split())


def fail(source: object, message: str, key: str | None = None) -> CheckpointError:
    """Build the one-line error `<file>: key '<key>': <message>`."""
    where = f"{source}: key {key!r}: " if key is not None else f"{source}: "
    return CheckpointError(one_line(where + message))


def dtype_name(dtype: np.dtype) -> str:
    """`bfloat16`, `float32`, ... (numpy names ml_dtypes types correctly)."""
    return np.dtype(dtype).name


def as_float_dtype(dtype: object) -> np.dtype | None:
    """Normalise a user dtype request (None, "bfloat16", np.float32, ...) to an accepted float dtype."""
    if dtype is None:
        return None
    try:
        resolved = np.dtype(getattr(ml_dtypes, dtype, dtype) if isinstance(dtype, str) else dtype)
    except TypeError as e:
        raise CheckpointError(f"dtype: expected one of float32, bfloat16, float16, found {dtype!r} ({e})") from None
    if resolved not in FLOAT_DTYPES:
        raise CheckpointError(f"dtype: expected one of float32, bfloat16, float16, found {dtype_name(resolved)}")
    return resolved


def _listed(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def check_keys(source: object, found: Iterable[str], expected: Iterable[str]) -> None:
    """Every expected key present and nothing else."""
    found_set, expected_list = set(found), list(expected)
    missing = [k for k in expected_list if k not in found_set]
    if missing:
        raise fail(source, f"missing {len(missing)} of {len(expected_list)} expected keys: {_listed(missing)}",
                   key=missing[0])
    expected_set = set(expected_list)
    extra = sorted(k for k in found_set if k not in expected_set)
    if extra:
        raise fail(source, f"{len(extra)} unexpected keys: {_listed(extra)}", key=extra[0])


def check_dtype(source: object, key: str, dtype: np.dtype) -> None:
    """Parameters are float32, bfloat16 or float16; anything else (int32, object...) is rejected."""
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise fail(source, f"expected dtype float32, bfloat16 or float16, found {dtype_name(dtype)}", key=key)


def check_tensor(source: object, key: str, info: TensorInfo, expected: Shape) -> None:
    """Shape exactly `expected`, dtype a float type."""
    if tuple(info.shape) != tuple(expected):
        raise fail(source, f"expected shape {tuple(expected)}, found {tuple(info.shape)}", key=key)
    check_dtype(source, key, info.dtype)


def check_index(source: object, index: Mapping[str, TensorInfo], expected: Mapping[str, Shape]) -> None:
    """Keys, shapes and dtypes of a whole file header against an expected table."""
    check_keys(source, index.keys(), expected.keys())
    for key, shape in expected.items():
        check_tensor(source, key, index[key], shape)


def validate_params(flat: Mapping[str, np.ndarray], expected: Mapping[str, Shape],
                    source: object = "<params>") -> None:
    """Check an in-memory flat param dict before writing it anywhere."""
    index = {}
    for key, value in flat.items():
        if not isinstance(value, np.ndarray) and not hasattr(value, "__array__"):
            raise fail(source, f"expected an array, found {type(value).__name__}", key=key)
        arr = np.asarray(value)
        index[key] = TensorInfo(tuple(arr.shape), arr.dtype)
    check_index(source, index, expected)
