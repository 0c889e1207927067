"""How each stacked big_vision weight becomes the [K, N] matrices the model actually multiplies by.

Quantization is per output channel and per block of the contraction dim, so it
must see every weight in the orientation of its matmul: a scale that mixed two
layers, or two heads' input features, would not be one a kernel can apply.
This table is the single place that knows those orientations; the fake-quant
reference and both exporters (ONNX, TFLite) go through it, so they quantize
the same numbers. Each entry follows `pg2edge.model`'s contraction:

| key | stored | per matmul [K, N] |
|---|---|---|
| img/embedding/kernel | [P, P, 3, D] | [P*P*3, D] (patches flattened h, w, c) |
| .../{query,key,value}/kernel | [L, D, H, hd] | [D, H*hd] per layer |
| .../out/kernel | [L, H, hd, D] | [H*hd, D] per layer |
| .../Dense_0/kernel, Dense_1/kernel | [L, D, F], [L, F, D] | [D, F], [F, D] per layer |
| img/head/kernel | [D, Dt] | [D, Dt] |
| llm/embedder/input_embedding | [V, Dt] | [Dt, V]: the tied LM head `x @ table.T` |
| llm/layers/attn/q_einsum/w | [L, N, Dt, Ht] | [Dt, N*Ht] per layer, heads flattened (n, h) |
| llm/layers/attn/kv_einsum/w | [L, 2, K, Dt, Ht] | [Dt, K*Ht] per layer and k/v |
| llm/layers/attn/attn_vec_einsum/w | [L, N, Ht, Dt] | [N*Ht, Dt] per layer |
| llm/layers/mlp/gating_einsum | [L, 2, Dt, F] | [Dt, F] per layer and gate/up |
| llm/layers/mlp/linear | [L, F, Dt] | [F, Dt] per layer |

Everything else (norm scales, biases, `img/pos_embedding`) is not a matmul weight.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

_VIT = r"img/Transformer/encoderblock"


@dataclass(frozen=True)
class _Layout:
    ndim: int  # rank of the stored tensor
    lead: int  # leading axes that index separate matmuls (layer, k/v, gate/up)
    perm: tuple[int, ...]  # order of the trailing axes: K axes first, then N axes
    k_axes: int  # how many of the permuted trailing axes form K


_LAYOUTS: tuple[tuple[re.Pattern[str], _Layout], ...] = tuple((re.compile(p), layout) for p, layout in (
    (r"img/embedding/kernel", _Layout(4, 0, (0, 1, 2, 3), 3)),
    (rf"{_VIT}/MultiHeadDotProductAttention_0/(query|key|value)/kernel", _Layout(4, 1, (0, 1, 2), 1)),
    (rf"{_VIT}/MultiHeadDotProductAttention_0/out/kernel", _Layout(4, 1, (0, 1, 2), 2)),
    (rf"{_VIT}/MlpBlock_0/Dense_[01]/kernel", _Layout(3, 1, (0, 1), 1)),
    (r"img/head/kernel", _Layout(2, 0, (0, 1), 1)),
    (r"llm/embedder/input_embedding", _Layout(2, 0, (1, 0), 1)),
    (r"llm/layers/attn/q_einsum/w", _Layout(4, 1, (1, 0, 2), 1)),
    (r"llm/layers/attn/kv_einsum/w", _Layout(5, 2, (1, 0, 2), 1)),
    (r"llm/layers/attn/attn_vec_einsum/w", _Layout(4, 1, (0, 1, 2), 2)),
    (r"llm/layers/mlp/gating_einsum", _Layout(4, 2, (0, 1), 1)),
    (r"llm/layers/mlp/linear", _Layout(3, 1, (0, 1), 1)),
))


def _layout(name: str) -> _Layout | None:
    for pattern, layout in _LAYOUTS:
        if pattern.fullmatch(name):
            return layout
    return None


def is_matmul_weight(name: str) -> bool:
    """Whether `name` is a weight the model multiplies activations by (the only kind we quantize)."""
    return _layout(name) is not None


@dataclass(frozen=True)
class MatmulView:
    """One stored weight seen as a stack (`lead_shape`) of [K, N] matmul weights."""

    name: str
    shape: tuple[int, ...]
    lead: int
    perm: tuple[int, ...]
    k_axes: int

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return self.shape[:self.lead]

    @property
    def _permuted(self) -> tuple[int, ...]:
        trailing = self.shape[self.lead:]
        return tuple(trailing[p] for p in self.perm)

    @property
    def k(self) -> int:
        return math.prod(self._permuted[:self.k_axes])

    @property
    def n(self) -> int:
        return math.prod(self._permuted[self.k_axes:])

    @property
    def _axes(self) -> tuple[int, ...]:
        return tuple(range(self.lead)) + tuple(self.lead + p for p in self.perm)

    def to_kn(self, w: np.ndarray) -> np.ndarray:
        """Stored weight -> [*lead_shape, K, N]."""
        w = np.asarray(w)
        if tuple(w.shape) != self.shape:
            raise ValueError(f"{self.name}: expected shape {self.shape}, found {tuple(w.shape)}")
        return w.transpose(self._axes).reshape(self.lead_shape + (self.k, self.n))

    def from_kn(self, w_kn: np.ndarray) -> np.ndarray:
        """[*lead_shape, K, N] -> the stored layout (inverse of `to_kn`)."""
        w_kn = np.asarray(w_kn)
        expected = self.lead_shape + (self.k, self.n)
        if tuple(w_kn.shape) != expected:
            raise ValueError(f"{self.name}: expected [..., K, N] shape {expected}, found {tuple(w_kn.shape)}")
        permuted = w_kn.reshape(self.lead_shape + self._permuted)
        return permuted.transpose(np.argsort(self._axes))

    def matrices(self, w: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """(lead index, [K, N] weight) for every matmul stacked in `w`, e.g. ((layer, kv), w_kn)."""
        w_kn = self.to_kn(w)
        for index in np.ndindex(*self.lead_shape):
            yield index, w_kn[index]


def matmul_view(name: str, shape: Sequence[int]) -> MatmulView | None:
    """The [K, N] view of weight `name` (None for norms, biases, position embeddings)."""
    layout = _layout(name)
    if layout is None:
        return None
    shape = tuple(int(d) for d in shape)
    if len(shape) != layout.ndim:
        raise ValueError(f"{name}: expected a rank-{layout.ndim} weight, found shape {shape}")
    return MatmulView(name=name, shape=shape, lead=layout.lead, perm=layout.perm, k_axes=layout.k_axes)


def matmul_label(name: str, index: tuple[int, ...]) -> str:
    """`name[i, j]`: how errors and reports name one matmul of a stacked weight."""
    return f"{name}[{', '.join(map(str, index))}]" if index else name
