"""The readers behind `lazy_checkpoint`: one tensor, or one layer of a stacked one, read from disk on demand.

Converting 3B must not hold the float model, so every read is `seek` +
`readinto` straight into the array handed back (no `np.memmap`: mapped pages
would count in RSS); a dtype conversion goes through a bounded scratch buffer.
`loader._open` has validated every header before a reader exists; each read
re-checks that the file is the one validated (size and mtime), so a replaced
or truncated file is an error rather than someone else's bytes.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from pg2edge.checkpoint.hf import HFIndex
from pg2edge.checkpoint.hf_mapping import Rule, hf_rules
from pg2edge.checkpoint.lazy import Lazy, LazyStack, is_stacked
from pg2edge.checkpoint.npz import _member_names, _open_zip, _read_member, read_npy_header
from pg2edge.checkpoint.validate import Shape, TensorInfo, fail
from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes

CHUNK_BYTES = 8 << 20  # scratch for a dtype conversion: memory stays one output array + this
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature, ..., name and extra lengths
_LOCAL_MAGIC = b"PK\x03\x04"
_ENCRYPTED = 0x1


def _check_layer(key: str, i: int, depth: int) -> None:
    """An out-of-range layer would silently read a neighbour's bytes: refuse it."""
    if not 0 <= i < depth:
        raise IndexError(f"{key}: layer {i} out of range for a stack of {depth}")


class _File:
    """A validated file, reopened for each read and refused if it changed since validation."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp = self._stamp_of(path.stat())

    @staticmethod
    def _stamp_of(st: os.stat_result) -> tuple[int, int]:
        """Size and mtime: what changes when a checkpoint is rewritten or truncated."""
        return st.st_size, st.st_mtime_ns

    def open(self, key: str | None = None, buffering: int = 0) -> BinaryIO:
        """The file, opened for reading, after checking it is still the one validated."""
        f = open(self.path, "rb", buffering=buffering)
        if self._stamp_of(os.fstat(f.fileno())) != self._stamp:
            f.close()
            raise fail(self.path, "changed on disk since it was validated; load the checkpoint again", key=key)
        return f

    def _fill(self, f: BinaryIO, arr: np.ndarray, key: str) -> None:
        """Read exactly `arr.nbytes` bytes into C-contiguous `arr`."""
        view = memoryview(arr.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                raise fail(self.path, f"expected {len(view)} bytes of tensor data, found the end of the file "
                                      f"after {done} (truncated since it was validated?)", key=key)
            done += n

    def read_into(self, target: np.ndarray, offset: int, stored: np.dtype, key: str) -> None:
        """Fill `target` (any writable view, any dtype) from the C-ordered `stored` data at `offset`.

        A C-contiguous target of the stored dtype is read into directly; any
        other goes through a scratch buffer of at most CHUNK_BYTES (or one
        leading-axis row of a strided target).
        """
        with self.open(key) as f:
            f.seek(offset)
            if target.flags.c_contiguous and target.dtype == stored:
                self._fill(f, target, key)
                return
            rows = target.reshape(-1) if target.flags.c_contiguous else target
            row_bytes = math.prod(rows.shape[1:]) * stored.itemsize
            step = max(1, CHUNK_BYTES // max(1, row_bytes))
            scratch = np.empty((min(step, len(rows)), *rows.shape[1:]), stored)
            for start in range(0, len(rows), step):
                part = scratch[: min(step, len(rows) - start)]
                self._fill(f, part, key)
                rows[start:start + len(part)] = part

    def read(self, offset: int, shape: Shape, stored: np.dtype, dtype: np.dtype, key: str) -> np.ndarray:
        """The C-ordered `stored` array of `shape` at `offset`, returned as a new `dtype` array."""
        out = np.empty(shape, dtype)
        self.read_into(out, offset, stored, key)
        return out


# --- big_vision .npz -----------------------------------------------------------------------------------------


class _Member(NamedTuple):
    """Where one `.npz` member's array lives."""

    name: str
    info: TensorInfo  # shape and stored dtype (bf16 for `|V2`)
    offset: int | None  # file offset of the C-ordered array data; None: compressed/Fortran, read whole


def _locate(f: BinaryIO, zinfo: zipfile.ZipInfo, info: TensorInfo, file_size: int, path: Path,
            key: str) -> int | None:
    """File offset of a stored member's array data, its sizes checked now (no CRC: that needs every byte)."""
    if zinfo.compress_type != zipfile.ZIP_STORED or zinfo.flag_bits & _ENCRYPTED:
        return None
    f.seek(zinfo.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_MAGIC:
        raise fail(path, "expected a zip local file header, found corrupt data (truncated?)", key=key)
    _, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
    start = zinfo.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    f.seek(start)
    found, fortran_order = read_npy_header(f, path, key)
    if found != info:
        raise fail(path, f"changed on disk since it was validated (now {found.dtype} {found.shape})", key=key)
    data = f.tell()
    need, held = math.prod(info.shape) * info.dtype.itemsize, zinfo.file_size - (data - start)
    if held < need:
        raise fail(path, f"expected a readable array, found corrupt data (the member holds {held} data bytes, "
                         f"{info.dtype} {info.shape} needs {need})", key=key)
    if held > need:
        raise fail(path, "expected the array to end the member, found trailing bytes", key=key)
    if data + need > file_size:
        raise fail(path, "expected the member's data inside the file, found it cut off (truncated)", key=key)
    return None if fortran_order and len(info.shape) > 1 else data


class _NpzReader:
    """Stored members: per-layer seek + read. Compressed (or Fortran-ordered) ones: decoded whole.

    A compressed member cannot be entered mid-stream, so its `layer(i)` decodes
    the member (CRC checked) and keeps that one member, in its stored dtype,
    for the next layers; reading another compressed member replaces it, so
    memory stays bounded by the largest member. Stored members are never
    CRC-checked here (that needs every byte); `load_checkpoint` does check.
    """

    def __init__(self, path: Path):
        self.path, self.file = path, _File(path)
        self._lock = threading.Lock()
        self._cached: tuple[str, np.ndarray] | None = None

    def members(self, index: Mapping[str, TensorInfo], keys: list[str]) -> dict[str, _Member]:
        """Locate every member's data now, so a malformed member fails before anything is read."""
        with _open_zip(self.path) as zf, self.file.open(buffering=-1) as f:
            names, size = _member_names(zf, self.path), os.fstat(f.fileno()).st_size
            return {key: _Member(names[key], index[key],
                                 _locate(f, zf.getinfo(names[key]), index[key], size, self.path, key))
                    for key in keys}

    def _decode(self, member: _Member, key: str) -> np.ndarray:
        """The whole member through zipfile (inflated, CRC checked), in its stored dtype."""
        with self.file.open(key, buffering=-1) as f:
            try:
                zf = zipfile.ZipFile(f)
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise fail(self.path, f"expected the zip archive validated earlier, found a corrupt one ({e})",
                           key=key) from None
            with zf:
                return _read_member(zf, member.name, self.path, key)

    def _decoded_layer(self, member: _Member, key: str, i: int, dtype: np.dtype) -> np.ndarray:
        """Layer i of a compressed member, decoding it only when it is not the one cached."""
        with self._lock:
            if self._cached is None or self._cached[0] != member.name:
                self._cached = None  # free the previous member before decoding the next
                self._cached = (member.name, self._decode(member, key))
            whole = self._cached[1]
        return np.array(whole[i], dtype=dtype)  # a copy: callers own their layer

    def lazy(self, key: str, member: _Member, dtype: np.dtype | None) -> Lazy:
        """`key`'s tensor as `dtype` (None: as stored); layers of a stored member are read on their own."""
        shape, stored = member.info.shape, member.info.dtype
        out = stored if dtype is None else dtype
        layer_bytes = math.prod(shape[1:]) * stored.itemsize

        def load() -> np.ndarray:
            if member.offset is None:
                return self._decode(member, key).astype(out, copy=False)
            return self.file.read(member.offset, shape, stored, out, key)

        def read_layer(i: int) -> np.ndarray:
            _check_layer(key, i, shape[0])
            if member.offset is None:
                return self._decoded_layer(member, key, i, out)
            return self.file.read(member.offset + i * layer_bytes, shape[1:], stored, out, key)

        return LazyStack(shape, out, read_layer, load) if is_stacked(key) else Lazy(shape, out, load)


def lazy_npz(path: str | os.PathLike, index: Mapping[str, TensorInfo], cfg: ModelConfig,
             dtype: np.dtype | None) -> dict[str, Lazy]:
    """Lazy params of a validated big_vision `.npz` (`index`: its member headers)."""
    reader = _NpzReader(Path(path))
    keys = list(param_shapes(cfg))
    return {key: reader.lazy(key, member, dtype) for key, member in reader.members(index, keys).items()}


# --- Hugging Face safetensors --------------------------------------------------------------------------------


def _writes_through(view: np.ndarray, base: np.ndarray, shape: Shape) -> bool:
    """Whether `view` (of `shape`) is a writable, one-to-one view of all of `base`, not a copy."""
    return (view.shape == tuple(shape) and view.size == base.size and view.flags.writeable
            and all(stride != 0 or n == 1 for stride, n in zip(view.strides, view.shape))
            and np.may_share_memory(view, base))


class _HFReader:
    """Builds a big_vision slot (a whole array or one layer) from its HF tensors with `hf_mapping`'s rules."""

    def __init__(self, index: HFIndex):
        self.index = index
        self.files = {path: _File(path) for path in index.files}

    def _fill(self, slot: np.ndarray, rule: Rule) -> None:
        """`slot[...] = rule.from_hf(hf tensor)`, streamed into `slot` whenever the HF layout is a view of it.

        `rule.to_hf(slot)` is a writable view of `slot` for the transposes
        (Dense kernels, o_proj, the vision heads), so HF rows are read in
        chunks straight into place: one layer costs one layer. Where it is a
        copy (q/k/v head splits), the HF tensor is read whole, then mapped.
        The padded embedding's rule keeps rows [0, min_rows) unchanged, so
        only those rows are read.
        """
        entry = self.index.entries[rule.hf]
        stored = entry.header.tensors[entry.name]
        file, offset, key = self.files[entry.file], entry.header.data_start + stored.begin, entry.name
        if rule.min_rows is not None and slot.shape == (rule.min_rows, *stored.info.shape[1:]):
            file.read_into(slot, offset, stored.info.dtype, key)
            return
        target = rule.to_hf(slot)
        if _writes_through(target, slot, stored.info.shape):
            file.read_into(target, offset, stored.info.dtype, key)
            return
        del target  # a copy: free it before reading the tensor
        slot[...] = rule.from_hf(file.read(offset, stored.info.shape, stored.info.dtype, stored.info.dtype, key))

    def slot(self, rules: list[Rule], depth: int, shape: Shape, dtype: np.dtype) -> np.ndarray:
        """A whole array (depth 0) or one layer (depth 1), filled rule by rule exactly as `iter_hf` fills it."""
        out = np.empty(shape, dtype)
        for rule in rules:
            self._fill(out[rule.index[depth:]], rule)
        return out

    def lazy(self, key: str, shape: Shape, rules: list[Rule], dtype: np.dtype | None) -> Lazy:
        """`key`'s tensor; dtype None keeps its first HF tensor's dtype, as `iter_hf` does."""
        out = self.index.entries[rules[0].hf].info.dtype if dtype is None else dtype

        def load() -> np.ndarray:
            return self.slot(rules, 0, shape, out)

        if not is_stacked(key):
            return Lazy(shape, out, load)
        by_layer: dict[int, list[Rule]] = {i: [] for i in range(shape[0])}
        for rule in rules:
            by_layer[rule.index[0]].append(rule)

        def read_layer(i: int) -> np.ndarray:
            _check_layer(key, i, shape[0])
            return self.slot(by_layer[i], 1, shape[1:], out)

        return LazyStack(shape, out, read_layer, load)


def lazy_hf(index: HFIndex, cfg: ModelConfig, dtype: np.dtype | None) -> dict[str, Lazy]:
    """Lazy params of a validated HF checkpoint: each layer read from that layer's HF tensors."""
    reader = _HFReader(index)
    shapes = param_shapes(cfg)
    return {key: reader.lazy(key, shapes[key], rules, dtype) for key, rules in hf_rules(cfg).items()}

