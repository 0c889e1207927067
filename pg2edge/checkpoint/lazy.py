"""Weights that are read or generated only when an exporter needs their bytes.

Converting 3B must never hold the float model in memory: the exporters walk
the model layer by layer and ask for one layer's slice of a stacked weight at
a time (`LazyStack.layer`). Random-init weights are generated per layer from
their own seed, so `random_params` and `lazy_random_params` agree exactly.
"""

from __future__ import annotations

import operator
import zlib
from typing import Callable

import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes

_LAYERNORM_SCALES = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")
_STACKED_PREFIXES = ("img/Transformer/encoderblock/", "llm/layers/")


class Lazy:
    """A tensor known by shape and dtype; `materialize()` produces its values."""

    def __init__(self, shape: tuple[int, ...], dtype, load: Callable[[], np.ndarray]):
        self.shape, self.dtype, self._load = tuple(shape), np.dtype(dtype), load

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def materialize(self) -> np.ndarray:
        arr = np.asarray(self._load())
        if arr.shape != self.shape:
            raise ValueError(f"lazy tensor produced shape {arr.shape}, expected {self.shape}")
        return arr

    def __array__(self, dtype=None, copy=None):
        arr = self.materialize()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class LazyStack(Lazy):
    """A weight stacked over layers on axis 0; `layer(i)` reads only layer i.

    `load` reads the whole stack at once when a source can do better than
    filling it layer by layer (one contiguous read of a big_vision member).
    """

    def __init__(self, shape: tuple[int, ...], dtype, read_layer: Callable[[int], np.ndarray],
                 load: Callable[[], np.ndarray] | None = None):
        super().__init__(shape, dtype, load if load is not None else self._stack)
        self.read_layer = read_layer

    def _stack(self) -> np.ndarray:
        """Fill one preallocated array, so the whole stack costs its own size plus one layer (not 2x)."""
        out: np.ndarray | None = None
        for i in range(self.shape[0]):
            layer = np.asarray(self.read_layer(i))
            if layer.shape != self.shape[1:]:
                raise ValueError(f"lazy layer {i} has shape {layer.shape}, expected {self.shape[1:]}")
            if out is None:
                out = np.empty(self.shape, layer.dtype)
            out[i] = layer
            del layer
        return np.empty(self.shape, self.dtype) if out is None else out

    def layer(self, i: int) -> Lazy:
        """Layer `i` (0 <= i < depth; out of range is an error, never another tensor's bytes)."""
        i = operator.index(i)
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"layer {i} out of range for a stack of {self.shape[0]}")
        return Lazy(self.shape[1:], self.dtype, lambda: self.read_layer(i))


def is_stacked(key: str) -> bool:
    """Whether a big_vision key holds one slice per layer on axis 0."""
    return key.startswith(_STACKED_PREFIXES)


def random_tensor(key: str, shape: tuple[int, ...], seed: int, scale: float, layer: int | None = None,
                  dtype=np.float32) -> np.ndarray:
    """N(0, scale) (LayerNorm scales 1 + noise), seeded by (seed, key[, layer]) alone."""
    parts = [seed, zlib.crc32(key.encode())] + ([] if layer is None else [layer])
    values = np.random.default_rng(parts).standard_normal(shape, dtype=np.float32) * np.float32(scale)
    if key.endswith(_LAYERNORM_SCALES):
        values += np.float32(1.0)
    return values.astype(dtype, copy=False)


def lazy_random_params(cfg: ModelConfig, seed: int, dtype=np.float32, scale: float = 0.02) -> dict[str, Lazy]:
    """Deterministic random weights for `cfg`, generated on demand (per layer for stacked keys)."""
    out: dict[str, Lazy] = {}
    for key, shape in param_shapes(cfg).items():
        if is_stacked(key):
            out[key] = LazyStack(shape, dtype, lambda i, k=key, s=shape: random_tensor(k, s[1:], seed, scale, i, dtype))
        else:
            out[key] = Lazy(shape, dtype, lambda k=key, s=shape: random_tensor(k, s, seed, scale, None, dtype))
    return out
