"""Symmetric weight quantization in numpy: the reference every exported artifact is checked against.

A weight is seen the way an exporter sees a matmul `y = x @ w_kn`: `w_kn` is
[K, N] with K the contraction (input) dim and N the output dim. A scheme gives
one scale per output channel (`block=None`) or per output channel and block of
`block` consecutive K entries. With `qmax = 2**(bits-1) - 1`:

    scale = max|w| / qmax   (per channel / block; float32, or rounded up to float16)
    q     = clip(round_half_to_even(w / scale), -qmax - 1, qmax)
    w_hat = q * scale

An all-zero block gets a tiny positive scale, so it dequantizes to exact zeros.
float16 scales are rounded up, so no weight is clipped and the error stays
within scale / 2; below float16's normal range (scale < 6.1e-5) they are
coarse, as in any float16-scale format. `fake_quant` is idempotent (for
float16 scales, in the normal range).

`clip="mse"` (block-wise schemes; what the int4 recipes use) instead tries
`scale = alpha * max|w| / qmax` for every alpha in `CLIP_GRID` and keeps,
per block, the one with the least squared error (the first on a tie), so the
error bound above becomes "no worse than `clip="max"`'s, in sum": clipping
a block's largest weight buys a finer step for the rest of it, which lowers
the squared error of Gaussian weights by ~20 % at 4 bits (and the shipped
model's int4 drift with it). A candidate's error is summed by halving the
block (`_block_sq_error`), an order `train.qat` repeats exactly.
Codes are stored [N, K] (int4 values in an int8 container), which is the
row-major layout of ONNX `MatMulNBits`, `GatherBlockQuantized` and TFLite
`FULLY_CONNECTED` weights, so packers never transpose again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

SCALE_DTYPES = ("float32", "float16")
CLIPS = ("max", "mse")
CLIP_GRID = tuple(1.0 - i / 32 for i in range(12))  # alpha = 1, 31/32, ..., 21/32 of max|w|
_CHUNK_ELEMENTS = 1 << 24  # rows are quantized in chunks of ~16M weights to bound temporaries
_SEARCH_CHUNK_ELEMENTS = 1 << 18  # the clip search runs on pieces that stay in cache
# Smallest scale used: keeps w / scale exact enough that |w - w_hat| <= scale / 2 holds for
# subnormal weights too (every float16 value, even subnormal, is a normal float32).
_MIN_SCALE = {"float32": np.float32(np.finfo(np.float32).tiny), "float16": np.float32(2.0**-24)}


@dataclass(frozen=True)
class Scheme:
    """How one matmul weight is quantized: bit width, block along K (None = per channel), scale precision."""

    bits: int
    block: int | None = None
    scale_dtype: str = "float32"
    clip: str = "max"  # "mse": per block, the scale of least squared error among CLIP_GRID (see module doc)

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"quantization bits must be 4 or 8, found {self.bits}")
        if self.block is not None and (self.block < 16 or self.block & (self.block - 1)):
            raise ValueError(f"quantization block must be a power of two >= 16, found {self.block}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {', '.join(SCALE_DTYPES)}, found {self.scale_dtype!r}")
        if self.clip not in CLIPS:
            raise ValueError(f"clip must be one of {', '.join(CLIPS)}, found {self.clip!r}")
        if self.clip == "mse" and self.block is None:
            raise ValueError("clip='mse' needs a block-wise scheme (per-channel scales are searched over K at once)")

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def label(self) -> str:
        """Short name for reports: `int4-b32`, `int8-pc`, `int4-b64-f16s`."""
        granularity = "pc" if self.block is None else f"b{self.block}"
        suffix = "-f16s" if self.scale_dtype == "float16" else ""
        clip = "-mse" if self.clip == "mse" else ""
        return f"int{self.bits}-{granularity}{suffix}{clip}"

    def to_dict(self) -> dict:
        return {"bits": self.bits, "block": self.block, "scale_dtype": self.scale_dtype, "clip": self.clip}


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes and scales of one [K, N] matmul weight, stored output-channel-major."""

    q: np.ndarray  # int8 [N, K]; int4 codes lie in [-8, 7]
    scales: np.ndarray  # float32 [N, K // block] ([N, 1] per channel)
    scheme: Scheme
    shape_kn: tuple[int, int]

    @property
    def k(self) -> int:
        return self.shape_kn[0]

    @property
    def n(self) -> int:
        return self.shape_kn[1]

    @property
    def block_size(self) -> int:
        """Entries of K that share a scale (K itself for per-channel)."""
        return self.scheme.block or self.k

    @property
    def n_blocks(self) -> int:
        return self.k // self.block_size


def _label(name: str | None) -> str:
    return name if name else "weight"


def _check_weight(w_kn: np.ndarray, scheme: Scheme, name: str | None) -> np.ndarray:
    w = np.asarray(w_kn)
    if w.ndim != 2:
        raise ValueError(f"{_label(name)}: expected a [K, N] matmul weight, found shape {tuple(w.shape)}")
    k, n = w.shape
    if k == 0 or n == 0:
        raise ValueError(f"{_label(name)}: cannot quantize an empty weight of shape {tuple(w.shape)}")
    if scheme.block is not None and k % scheme.block:
        raise ValueError(f"{_label(name)}: contraction dim K={k} of weight [K, N]={[k, n]} is not divisible "
                         f"by the {scheme.label} block {scheme.block}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise ValueError(f"{_label(name)}: weight of shape {(k, n)} has NaN or infinite values")
    return w


def _scales(amax: np.ndarray, scheme: Scheme, name: str | None) -> np.ndarray:
    """Per-block scales from per-block max |w|, in float32 (values rounded up to float16 if asked)."""
    scale = amax / np.float32(scheme.qmax)
    if scheme.scale_dtype == "float16":
        if (scale > np.finfo(np.float16).max).any():
            raise ValueError(f"{_label(name)}: max |w| = {float(amax.max()):g} overflows a float16 scale")
        half = scale.astype(np.float16)
        # Round up, never down: then |w / scale| <= qmax and no weight is clipped.
        half = np.where(half.astype(np.float32) < scale, np.nextafter(half, np.float16(np.inf)), half)
        scale = half.astype(np.float32)
    return np.maximum(scale, _MIN_SCALE[scheme.scale_dtype])


def _codes(w: np.ndarray, scale: np.ndarray, scheme: Scheme) -> np.ndarray:
    """clip(round_half_even(w / scale)) as float32, in one new buffer (`scale` broadcasts against `w`)."""
    q = np.divide(w, scale)
    np.rint(q, out=q)
    return np.clip(q, -scheme.qmax - 1, scheme.qmax, out=q)


def _block_sq_error(w_bx: np.ndarray, scale_x: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Per-block sum of (w_hat - w)^2 for weights laid out block-entry-first ([block, ...]): entry j is
    added to entry j + half, halving until one is left (train.qat adds the same pairs in the same order)."""
    e = _codes(w_bx, scale_x, scheme)  # one buffer, reused in place: this loop is most of an int4 conversion
    np.multiply(e, scale_x, out=e)
    np.subtract(e, w_bx, out=e)
    np.multiply(e, e, out=e)
    while e.shape[0] > 1:
        half = e.shape[0] // 2
        e = e[:half] + e[half:]  # contiguous halves: block-first keeps these adds vectorized
    return e[0]


def _searched_scales(w_nbk: np.ndarray, amax: np.ndarray, scheme: Scheme, name: str | None) -> np.ndarray:
    """Per block, the CLIP_GRID scale of least squared error (the first one on a tie)."""
    rows = max(1, _SEARCH_CHUNK_ELEMENTS // (w_nbk.shape[1] * w_nbk.shape[2]))
    if w_nbk.shape[0] > rows:  # cache-sized pieces (each candidate makes several passes), on every core
        starts = range(0, w_nbk.shape[0], rows)
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            return np.concatenate(list(pool.map(
                lambda i: _searched_scales(w_nbk[i:i + rows], amax[i:i + rows], scheme, name), starts)))
    w_bnb = np.ascontiguousarray(np.moveaxis(w_nbk, -1, 0))
    best = _scales(amax, scheme, name)
    best_err = _block_sq_error(w_bnb, best, scheme)
    for alpha in CLIP_GRID[1:]:
        scale = _scales(amax * np.float32(alpha), scheme, name)
        err = _block_sq_error(w_bnb, scale, scheme)
        better = err < best_err
        best = np.where(better, scale, best)
        best_err = np.where(better, err, best_err)
    return best


def _quantize_rows(w_nk: np.ndarray, scheme: Scheme, block: int,
                   name: str | None) -> tuple[np.ndarray, np.ndarray]:
    n, k = w_nk.shape
    w_nbk = w_nk.reshape(n, k // block, block)
    amax = np.abs(w_nbk).max(axis=-1)
    scale = _searched_scales(w_nbk, amax, scheme, name) if scheme.clip == "mse" else _scales(amax, scheme, name)
    return _codes(w_nbk, scale[..., None], scheme).astype(np.int8).reshape(n, k), scale


def quantize(w_kn: np.ndarray, scheme: Scheme, *, name: str | None = None) -> QuantizedTensor:
    """Quantize one [K, N] matmul weight; `name` only labels errors (e.g. 'llm/layers/mlp/linear[3]')."""
    w = _check_weight(w_kn, scheme, name)
    k, n = w.shape
    block = scheme.block or k
    q = np.empty((n, k), np.int8)
    scales = np.empty((n, k // block), np.float32)
    rows = max(1, _CHUNK_ELEMENTS // k)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        q[start:stop], scales[start:stop] = _quantize_rows(w[:, start:stop].T, scheme, block, name)
    return QuantizedTensor(q=q, scales=scales, scheme=scheme, shape_kn=(k, n))


def dequantize_rows(qt: QuantizedTensor, out: np.ndarray | None = None) -> np.ndarray:
    """The float32 weight in the codes' own [N, K] layout (no transpose: cheap for big tables).

    `out`, if given, must be a C-contiguous float32 [N, K] array (e.g. a slice of
    the caller's result), which saves a copy of the whole weight.
    """
    n, k = qt.q.shape
    if out is None:
        out = np.empty((n, k), np.float32)
    elif out.shape != (n, k) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, k)}")
    shape = (n, qt.n_blocks, qt.block_size)
    np.multiply(qt.q.reshape(shape), qt.scales[..., None], out=out.reshape(shape))
    return out


def dequantize(qt: QuantizedTensor) -> np.ndarray:
    """The float32 [K, N] weight the codes stand for (what every runtime computes with)."""
    return np.ascontiguousarray(dequantize_rows(qt).T)


def fake_quant(w_kn: np.ndarray, scheme: Scheme, *, name: str | None = None) -> np.ndarray:
    """Quantize then dequantize: the float weight a quantized artifact effectively uses."""
    return dequantize(quantize(w_kn, scheme, name=name))


def relative_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||w - w_hat||_F / ||w||_F, in float64 (0 for two zero tensors, inf if only w is zero)."""
    w64 = np.asarray(w, np.float64)
    diff = np.linalg.norm((w64 - np.asarray(w_hat, np.float64)).ravel())
    norm = np.linalg.norm(w64.ravel())
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return float(diff / norm)
