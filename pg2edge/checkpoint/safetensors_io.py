"""The safetensors format in numpy alone, so converters and devices need no extra package.

Layout: 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
offsets relative to the end of the header), then the raw little-endian data.
The reader validates the whole header against the file size before any data is
touched, then memory-maps the file and hands out one tensor view at a time.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import ml_dtypes
import numpy as np

from pg2edge.checkpoint.fsutil import atomic_file
from pg2edge.checkpoint.validate import TensorInfo, fail

METADATA_KEY = "__metadata__"
_MAX_HEADER = 100 * 1024 * 1024  # same limit as the reference implementation
_ALIGN = 8

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


class StoredTensor(NamedTuple):
    """A tensor's header entry: shape/dtype plus its byte range in the data section."""

    info: TensorInfo
    begin: int
    end: int


class Header(NamedTuple):
    """A validated safetensors header."""

    tensors: dict[str, StoredTensor]
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data section


def dtype_code(dtype: np.dtype) -> str:
    """numpy dtype -> safetensors dtype string (e.g. bfloat16 -> "BF16")."""
    dt = np.dtype(dtype)
    code = _CODES.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    if code is None:
        raise ValueError(f"no safetensors dtype for {dt.name}")
    return code


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_entry(path: Path, name: str, entry: object, data_len: int) -> StoredTensor:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise fail(path, f"expected a header entry with dtype, shape and data_offsets, found {entry!r}"[:300], key=name)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise fail(path, f"expected a safetensors dtype ({', '.join(DTYPES)}), found {dtype!r}", key=name)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise fail(path, f"expected shape as a list of non-negative ints, found {shape!r}", key=name)
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise fail(path, f"expected data_offsets [begin, end] with 0 <= begin <= end, found {offsets!r}", key=name)
    begin, end = offsets
    if end > data_len:
        raise fail(path, f"expected data_offsets within the {data_len}-byte data section, found [{begin}, {end}] "
                         "(file truncated?)", key=name)
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != nbytes:
        raise fail(path, f"expected {nbytes} bytes for {dtype} {shape}, found data_offsets [{begin}, {end}]", key=name)
    return StoredTensor(TensorInfo(tuple(shape), DTYPES[dtype]), begin, end)


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header: JSON, dtypes, shapes, offsets inside the file, no overlaps."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "no such file" if not path.exists() else "expected a file, found a directory")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise fail(path, f"expected an 8-byte header length, found a {size}-byte file (truncated)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise fail(path, f"expected a header length within the {size}-byte file, found {n} (truncated or "
                             "not safetensors)")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(path, f"expected a JSON header, found invalid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise fail(path, f"expected a JSON object header, found {type(doc).__name__}")
    metadata = doc.pop(METADATA_KEY, None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail(path, "expected __metadata__ to map strings to strings", key=METADATA_KEY)
    data_len = size - 8 - n
    tensors = {name: _parse_entry(path, name, entry, data_len) for name, entry in doc.items()}
    last_end, last_name = 0, None
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin < last_end:
            raise fail(path, f"expected non-overlapping data, found bytes [{t.begin}, {t.end}] overlapping "
                             f"{last_name!r}", key=name)
        last_end, last_name = max(last_end, t.end), name
    return Header(tensors, metadata, 8 + n)


def tensor_view(mm: np.ndarray, header: Header, name: str) -> np.ndarray:
    """Zero-copy view of one tensor in a memory-mapped file (`np.memmap(path, np.uint8, "r")`)."""
    t = header.tensors[name]
    raw = mm[header.data_start + t.begin: header.data_start + t.end]
    return raw.view(t.info.dtype).reshape(t.info.shape)


def open_memmap(path: str | os.PathLike) -> np.memmap:
    """Map a safetensors file read-only (bytes)."""
    return np.memmap(path, dtype=np.uint8, mode="r")


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor (copied out of the mapping) and the metadata; for small files and tests."""
    header = read_header(path)
    mm = open_memmap(path)
    try:
        return {name: np.array(tensor_view(mm, header, name)) for name in header.tensors}, header.metadata
    finally:
        del mm


def write_safetensors(path: str | os.PathLike, specs: Mapping[str, TensorInfo],
                      fetch: Callable[[str], np.ndarray], metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors in `specs` order, calling `fetch(name)` for one at a time; atomic."""
    path = Path(path)
    doc: dict[str, object] = {}
    if metadata:
        doc[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, info in specs.items():
        if name == METADATA_KEY:
            raise fail(path, "expected a tensor name, found the reserved header key", key=name)
        try:
            code = dtype_code(info.dtype)
        except ValueError as e:
            raise fail(path, str(e), key=name) from None
        nbytes = math.prod(info.shape) * np.dtype(info.dtype).itemsize
        doc[name] = {"dtype": code, "shape": list(info.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % _ALIGN)
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, info in specs.items():
            arr = np.asarray(fetch(name))
            if tuple(arr.shape) != tuple(info.shape) or arr.dtype != np.dtype(info.dtype):
                raise fail(path, f"expected {np.dtype(info.dtype).name} {tuple(info.shape)}, found "
                                 f"{arr.dtype.name} {tuple(arr.shape)}", key=name)
            little = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            f.write(np.ascontiguousarray(arr, dtype=little).reshape(-1).view(np.uint8))
    return path


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write a dict of in-memory arrays (convenience over `write_safetensors`)."""
    specs = {name: TensorInfo(tuple(np.shape(a)), np.asarray(a).dtype) for name, a in tensors.items()}
    return write_safetensors(path, specs, lambda name: np.asarray(tensors[name]), metadata)
