"""big_vision `.npz` checkpoints (the published `paligemma2-*.npz`), read lazily and never unpickled.

An `.npz` is a zip of `.npy` members named by flat `/`-joined keys, optionally
under `params/`. big_vision saves bfloat16 through `np.savez`, which stores it
as the 2-byte void dtype `|V2`; we view that back as `ml_dtypes.bfloat16`.
Headers are read first (shapes/dtypes for detection and validation without
touching tensor data), then tensors one at a time with `allow_pickle=False`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import ml_dtypes
import numpy as np

from pg2edge.checkpoint.fsutil import atomic_file
from pg2edge.checkpoint.validate import TensorInfo, as_float_dtype, fail
from pg2edge.errors import CheckpointError

PARAMS_PREFIX = "params/"
_NPY = ".npy"
_MEMBER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _stored_dtype(dtype: np.dtype, source: object, key: str) -> np.dtype:
    """The dtype a member really holds: `|V2` is big_vision's bfloat16; objects are refused."""
    if dtype.hasobject:
        raise fail(source, "holds a pickled object array; refusing to unpickle (expected a float array)", key=key)
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None:
        return np.dtype(ml_dtypes.bfloat16)
    return dtype


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open an `.npz`, telling a pickle or a bare `.npy` apart from a truncated zip."""
    if not path.is_file():
        raise fail(path, "no such file" if not path.exists() else "expected a file, found a directory")
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith(b"PK"):
        found = ("a pickle stream" if head[:1] == b"\x80" else "a bare .npy array" if head.startswith(b"\x93NUMPY")
                 else f"leading bytes {head!r}")
        raise fail(path, f"expected a zip archive (.npz), found {found}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise fail(path, f"expected a zip archive (.npz), found a corrupt or truncated one ({e})") from None


def _member_key(name: str) -> str:
    key = name[: -len(_NPY)] if name.endswith(_NPY) else name
    return key[len(PARAMS_PREFIX):] if key.startswith(PARAMS_PREFIX) else key


def _member_names(zf: zipfile.ZipFile, source: object) -> dict[str, str]:
    """key (no `params/`, no `.npy`) -> zip member name."""
    names: dict[str, str] = {}
    for name in zf.namelist():
        key = _member_key(name)
        if key in names:
            raise fail(source, f"stored twice (as {names[key]!r} and {name!r})", key=key)
        names[key] = name
    return names


def read_npy_header(f: BinaryIO, source: object, key: str) -> tuple[TensorInfo, bool]:
    """Parse a `.npy` header at `f`'s position: (shape + stored dtype, fortran_order); `f` ends at the data."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise fail(source, f"expected .npy format 1.0 or 2.0, found {version}", key=key)
    except CheckpointError:
        raise
    except _MEMBER_ERRORS as e:
        raise fail(source, f"expected a .npy array member, found a corrupt one ({e})", key=key) from None
    return TensorInfo(tuple(int(d) for d in shape), _stored_dtype(dtype, source, key)), bool(fortran_order)


def _read_member_header(zf: zipfile.ZipFile, name: str, source: object, key: str) -> TensorInfo:
    try:
        with zf.open(name) as f:
            return read_npy_header(f, source, key)[0]
    except CheckpointError:
        raise
    except _MEMBER_ERRORS as e:
        raise fail(source, f"expected a .npy array member, found a corrupt one ({e})", key=key) from None


def npz_index(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Shapes and dtypes of every member, from the `.npy` headers only."""
    path = Path(path)
    with _open_zip(path) as zf:
        return {key: _read_member_header(zf, name, path, key) for key, name in _member_names(zf, path).items()}


def _read_member(zf: zipfile.ZipFile, name: str, source: object, key: str) -> np.ndarray:
    try:
        with zf.open(name) as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
            trailing = f.read(1)  # reaching EOF makes zipfile verify the member's CRC
    except _MEMBER_ERRORS as e:
        raise fail(source, f"expected a readable array, found corrupt data ({e})", key=key) from None
    if trailing:
        raise fail(source, "expected the array to end the member, found trailing bytes", key=key)
    dtype = _stored_dtype(arr.dtype, source, key)
    return arr.view(dtype) if dtype != arr.dtype else arr


def iter_npz(path: str | os.PathLike, keys: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield `(key, array)` for `keys` in order, holding one tensor at a time."""
    path = Path(path)
    with _open_zip(path) as zf:
        names = _member_names(zf, path)
        for key in keys:
            if key not in names:
                raise fail(path, "missing", key=key)
            yield key, _read_member(zf, names[key], path, key)


def write_npz(path: str | os.PathLike,
              flat_params: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
              dtype: object = None) -> Path:
    """Write a big_vision-style `.npz` (bf16 as `|V2`) atomically, one tensor in memory at a time."""
    path, target = Path(path), as_float_dtype(dtype)
    items = flat_params.items() if isinstance(flat_params, Mapping) else flat_params
    seen: set[str] = set()
    with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in items:
            if not isinstance(key, str) or key in seen:
                raise fail(path, "expected unique string keys, found a duplicate or non-string key", key=str(key))
            seen.add(key)
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise fail(path, "expected a numeric array, found an object array", key=key)
            if target is not None:
                arr = arr.astype(target, copy=False)
            with zf.open(key + _NPY, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)
    return path
