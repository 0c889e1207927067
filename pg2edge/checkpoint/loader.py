"""One entry point over every format: detect, validate all headers, then stream or load tensors."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from pg2edge.checkpoint.detect import NPZ, detect_format, index_checkpoint, variant_of
from pg2edge.checkpoint.hf import HFIndex, iter_hf, validate_hf
from pg2edge.checkpoint.lazy import Lazy
from pg2edge.checkpoint.lazy_sources import lazy_hf, lazy_npz
from pg2edge.checkpoint.npz import iter_npz
from pg2edge.checkpoint.validate import TensorInfo, as_float_dtype, check_index, dtype_name
from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_count, param_shapes

Index = Mapping[str, TensorInfo] | HFIndex


def _open(path: str | os.PathLike, cfg: ModelConfig | None) -> tuple[str, Index, ModelConfig]:
    """Detect, index and validate every header (keys, shapes, dtypes) before any data is read."""
    fmt = detect_format(path)
    index = index_checkpoint(path, fmt)
    if cfg is None:
        cfg = variant_of(fmt, index, path)
    if fmt == NPZ:
        check_index(Path(path), index, param_shapes(cfg))
    else:
        validate_hf(index, cfg)
    return fmt, index, cfg


def _stream(path: str | os.PathLike, fmt: str, index: Index, cfg: ModelConfig,
            dtype: np.dtype | None) -> Iterator[tuple[str, np.ndarray]]:
    if fmt != NPZ:
        yield from iter_hf(index, cfg, dtype)
        return
    for key, arr in iter_npz(path, param_shapes(cfg)):
        yield key, arr if dtype is None else arr.astype(dtype, copy=False)
        del arr  # hold nothing while the next tensor is read


def iter_checkpoint(path: str | os.PathLike, cfg: ModelConfig | None,
                    dtype: object = None) -> Iterator[tuple[str, np.ndarray]]:
    """Validate now, then yield `(big_vision key, array)` one tensor at a time (bounded memory)."""
    target = as_float_dtype(dtype)
    fmt, index, cfg = _open(path, cfg)
    return _stream(path, fmt, index, cfg, target)


def load_checkpoint(path: str | os.PathLike, cfg: ModelConfig | None = None,
                    dtype: object = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The variant (detected when `cfg` is None) and its flat big_vision param dict, optionally cast."""
    target = as_float_dtype(dtype)
    fmt, index, cfg = _open(path, cfg)
    return cfg, dict(_stream(path, fmt, index, cfg, target))


def lazy_checkpoint(path: str | os.PathLike, cfg: ModelConfig | None = None,
                    dtype: object = np.float32) -> tuple[ModelConfig, dict[str, Lazy]]:
    """Like `load_checkpoint` (same checks, same values), but each tensor is read only when materialized.

    Every header is validated now; stacked keys are `LazyStack`s whose
    `layer(i)` reads just layer i, so an exporter never holds the float model.
    Data CRCs are not checked (that needs every byte): `load_checkpoint` does.
    """
    target = as_float_dtype(dtype)
    fmt, index, cfg = _open(path, cfg)
    params = lazy_npz(path, index, cfg, target) if fmt == NPZ else lazy_hf(index, cfg, target)
    return cfg, params


def describe(path: str | os.PathLike) -> dict:
    """Format, variant, parameter count, dtypes and size of a validated checkpoint (headers only)."""
    fmt, index, cfg = _open(path, None)
    if fmt == NPZ:
        infos, files = list(index.values()), [Path(path)]
    else:
        infos, files = [e.info for e in index.entries.values()], list(index.files)
    return {
        "path": str(path),
        "format": fmt,
        "variant": cfg.name,
        "parameters": param_count(cfg),
        "tensors": len(infos),
        "dtypes": dict(Counter(dtype_name(i.dtype) for i in infos).most_common()),
        "file_bytes": sum(f.stat().st_size for f in files),
        "final_logit_softcap": cfg.text.final_logit_softcap,
    }
