"""`quantize.matmul_view` in jnp: the same [K, N] orientation of every weight, traceable under jit.

`MatmulView.to_kn`/`from_kn` are numpy (they call `np.asarray`), so the
trainer re-expresses them from the view's public fields; QAT and LoRA both
go through these two functions, so they act on exactly the matrices the
quantizer and the exporters see.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg2edge.quantize.matmul_view import MatmulView


def _axes(view: MatmulView) -> tuple[int, ...]:
    return tuple(range(view.lead)) + tuple(view.lead + p for p in view.perm)


def _permuted(view: MatmulView) -> tuple[int, ...]:
    trailing = view.shape[view.lead:]
    return tuple(trailing[p] for p in view.perm)


def to_kn(view: MatmulView, w: jax.Array) -> jax.Array:
    """Stored weight -> [*lead_shape, K, N] (mirrors `MatmulView.to_kn`)."""
    if tuple(w.shape) != view.shape:
        raise ValueError(f"{view.name}: expected shape {view.shape}, found {tuple(w.shape)}")
    return jnp.transpose(w, _axes(view)).reshape(view.lead_shape + (view.k, view.n))


def from_kn(view: MatmulView, w_kn: jax.Array) -> jax.Array:
    """[*lead_shape, K, N] -> the stored layout (mirrors `MatmulView.from_kn`)."""
    expected = view.lead_shape + (view.k, view.n)
    if tuple(w_kn.shape) != expected:
        raise ValueError(f"{view.name}: expected [..., K, N] shape {expected}, found {tuple(w_kn.shape)}")
    axes = _axes(view)
    inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
    return jnp.transpose(w_kn.reshape(view.lead_shape + _permuted(view)), inverse)
