"""Pack `QuantizedTensor`s into the initializers of onnxruntime's quantized CPU kernels.

Layouts (verified against onnxruntime 1.32 by tests/quantize/test_ort_pack.py):

* `com.microsoft.MatMulNBits` (bits 4 or 8): `B` uint8 [N, n_blocks, block*bits/8],
  codes stored unsigned as `q + 2**(bits-1)`, 4-bit codes two per byte, low
  nibble first along K; `scales` [N, n_blocks] in A's dtype (a flat
  [N*n_blocks] is also accepted). With no `zero_points` input the op uses
  2**(bits-1) (8 / 128), i.e. exactly our symmetric codes, so none is stored.
  `block_size` must be a power of two >= 16; K need not be a multiple of it
  (the last block is padded; we pad with the zero-point code).
  Per-channel int8 is the same op with every block of a row given the row's
  scale: exact, and the codes are identical.
* `com.microsoft.GatherBlockQuantized` with uint8 data: the same unsigned
  codes and default zero point 2**(bits-1). Standalone: data [V, Dt*bits/8],
  `gather_axis=0`, `quantize_axis=1`, scales [V, Dt/block]. Tied to an LM
  head's MatMulNBits: data is the 3-D `B` itself with `quantize_axis=2`,
  scales reshaped to [V, n_blocks, 1] and the output reshaped back to
  [..., Dt] (reshaping `B` instead would be constant-folded into a copy).
* `DequantizeLinear` (int8 [K, N], per-axis or blocked scale) + `MatMul`:
  onnxruntime fuses this into MatMulNBits bits=8 block 32 whose accuracy level
  is the session option `session.qdq_matmulnbits_accuracy_level` (default 4:
  int8 activations); with `session.disable_quant_qdq=1` it constant-folds the
  weight to float32 instead (small file, float-sized memory and speed).

Speed (ORT 1.32 CPU): MatMulNBits bits=8 has no float-activation kernel, so
accuracy_level 0 is ~20x slower than a float32 MatMul; use it with
accuracy_level 4. bits=4 is fast at both levels.

This module needs only numpy. It packs bytes; the exporter (`export/onnx_quant.py`)
is the one place that builds the nodes reading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pg2edge.quantize.schemes import QuantizedTensor

PER_CHANNEL_BLOCK = 128  # block used to express a per-channel scale (see `pack_matmul_nbits`)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations


@dataclass(frozen=True, eq=False)
class MatMulNBitsWeights:
    """Initializers and attributes of one `com.microsoft.MatMulNBits` node."""

    b: np.ndarray  # uint8 [N, n_blocks, blob_size]
    scales: np.ndarray  # float32 [N, n_blocks]
    zero_points: np.ndarray | None  # always None: the op's default 2**(bits-1) matches our codes
    k: int
    n: int
    bits: int
    block_size: int

    @property
    def n_blocks(self) -> int:
        return self.b.shape[1]


@dataclass(frozen=True, eq=False)
class GatherBlockQuantizedWeights:
    """Initializers and attributes of one standalone `com.microsoft.GatherBlockQuantized` node."""

    data: np.ndarray  # uint8 [V, Dt * bits / 8]
    scales: np.ndarray  # float32 [V, Dt / block_size]
    bits: int
    block_size: int
    gather_axis: int = 0
    quantize_axis: int = 1


@dataclass(frozen=True, eq=False)
class DequantizeLinearWeights:
    """Initializers and attributes of `DequantizeLinear(q_kn, scale) -> MatMul`."""

    q_kn: np.ndarray  # int8 [K, N]
    scale: np.ndarray  # float32 [N] per-channel (axis 1), or [K / block, N] blocked (axis 0)
    axis: int
    block_size: int | None  # None = per-axis (opset 13); an int needs opset 21


def _block_size(qt: QuantizedTensor, block_size: int | None) -> int:
    """The packed block: the scheme's own, or for per-channel the requested / default one."""
    if qt.scheme.block is not None:
        if block_size not in (None, qt.scheme.block):
            raise ValueError(f"block_size {block_size} differs from the weight's {qt.scheme.label} block")
        return qt.scheme.block
    if block_size is None:
        size = PER_CHANNEL_BLOCK
        while size > 16 and size // 2 >= qt.k:  # small K: one block, little padding
            size //= 2
        return size
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, found {block_size}")
    return int(block_size)


def _blocks(qt: QuantizedTensor, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes [N, n_blocks, block] (K padded with the zero point) and scales [N, n_blocks]."""
    n, k = qt.q.shape
    n_blocks = -(-k // block)
    zero_point = 2 ** (qt.scheme.bits - 1)
    codes = np.full((n, n_blocks * block), zero_point, np.uint8)
    np.add(qt.q.view(np.uint8), np.uint8(zero_point), out=codes[:, :k])  # wraps mod 256: q + zero_point
    if qt.scheme.block is None:
        scales = np.repeat(qt.scales, n_blocks, axis=1)
    else:
        scales = qt.scales
    return codes.reshape(n, n_blocks, block), np.ascontiguousarray(scales, np.float32)


def _pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes -> bytes along the last axis, low bits first."""
    if bits == 8:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def pack_matmul_nbits(qt: QuantizedTensor, block_size: int | None = None) -> MatMulNBitsWeights:
    """MatMulNBits initializers for `qt`; a per-channel `qt` gets `block_size` (default 128) with repeated scales.

    Any per-channel block is exact, since every block of a row carries the row's
    scale. It is also the block over which accuracy_level 4 quantizes the
    activations: measured on [256, 2304] x [2304, 9216] (ORT 1.32, 2 threads),
    128 prefills ~1.4x faster than 32 at ~6.4e-3 vs ~5.4e-3 relative output
    error, and its scales add 3% to the codes instead of 12.5%.
    """
    block = _block_size(qt, block_size)
    codes, scales = _blocks(qt, block)
    return MatMulNBitsWeights(b=np.ascontiguousarray(_pack_bits(codes, qt.scheme.bits)), scales=scales,
                              zero_points=None, k=qt.k, n=qt.n, bits=qt.scheme.bits, block_size=block)


def pack_gather_block_quantized(qt: QuantizedTensor, block_size: int | None = None) -> GatherBlockQuantizedWeights:
    """GatherBlockQuantized initializers for an embedding table quantized as the LM head [K=Dt, N=V].

    A per-channel table uses the largest power-of-two block <= 128 dividing Dt:
    the gather cannot pad.
    """
    if qt.scheme.block is None and block_size is None:
        block_size = PER_CHANNEL_BLOCK
        while block_size > 16 and qt.k % block_size:
            block_size //= 2
    block = _block_size(qt, block_size)
    if qt.k % block:
        raise ValueError(f"embedding width {qt.k} is not a multiple of the gather block {block}")
    codes, scales = _blocks(qt, block)
    data = _pack_bits(codes, qt.scheme.bits).reshape(qt.n, -1)
    return GatherBlockQuantizedWeights(data=np.ascontiguousarray(data), scales=scales,
                                       bits=qt.scheme.bits, block_size=block)


def dequantize_linear_initializers(qt: QuantizedTensor) -> DequantizeLinearWeights:
    """int8 [K, N] codes and scales for the `DequantizeLinear` + `MatMul` path (int8 only)."""
    if qt.scheme.bits != 8:
        raise ValueError(f"DequantizeLinear path supports int8 only, found {qt.scheme.label}: use MatMulNBits")
    q_kn = np.ascontiguousarray(qt.q.T)
    if qt.scheme.block is None:
        return DequantizeLinearWeights(q_kn=q_kn, scale=np.ascontiguousarray(qt.scales[:, 0]), axis=1,
                                       block_size=None)
    return DequantizeLinearWeights(q_kn=q_kn, scale=np.ascontiguousarray(qt.scales.T), axis=0,
                                   block_size=qt.scheme.block)
