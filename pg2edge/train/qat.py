"""Quantization-aware training: the forward pass sees exactly the weights the int4/int8 export will hold.

`fake_quant_kn` is `quantize.schemes.quantize` + `dequantize` rewritten in
jnp step for step (f32 scale = max|w| / qmax per output channel and K-block,
float16 scales rounded up, the same floor on the scale, round-half-even,
clip; under `clip="mse"` the same scale search, its errors summed in the
same order), and `fake_quant_tree` applies `quantize.recipes`' own per-weight
scheme choice (block fallback included) through the same [K, N] views, so a
QAT model and `pg2edge convert --quant int4` agree bit for bit (on CPU and
GPU, whose f32 division is IEEE; TPU divides to within an ulp, which can only
move a weight sitting exactly on a rounding tie). Gradients
pass straight through: `w - sg(w) + sg(fq(w))` is exactly `fq(w)` in the
forward pass (unlike `w + sg(fq(w) - w)`, which can round) and the identity
backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize.matmul_view import matmul_view
from pg2edge.quantize.recipes import Recipe
from pg2edge.quantize.schemes import _MIN_SCALE, CLIP_GRID, Scheme
from pg2edge.train.views import from_kn, to_kn


def _divide(a: jax.Array, b: jax.Array) -> jax.Array:
    """IEEE `a / b`, elementwise: XLA's simplifier turns division by a constant or a broadcast into a
    multiplication by the reciprocal (1 ulp off numpy); the barrier hides `b` from that rewrite."""
    a, b = jnp.broadcast_arrays(a, b)
    return a / jax.lax.optimization_barrier(b)


def _scales(amax: jax.Array, scheme: Scheme) -> jax.Array:
    """Mirror of `schemes._scales` (float16 scales rounded up so nothing clips)."""
    scale = _divide(amax, jnp.float32(scheme.qmax))
    if scheme.scale_dtype == "float16":
        half = scale.astype(jnp.float16)
        half = jnp.where(half.astype(jnp.float32) < scale, jnp.nextafter(half, jnp.float16(jnp.inf)), half)
        scale = half.astype(jnp.float32)
    return jnp.maximum(scale, jnp.float32(_MIN_SCALE[scheme.scale_dtype]))


def _codes(w_nbk: jax.Array, scale_nb1: jax.Array, scheme: Scheme) -> jax.Array:
    return jnp.clip(jnp.round(_divide(w_nbk, scale_nb1)), -scheme.qmax - 1, scheme.qmax)


def _block_sq_error(w_nbk: jax.Array, scale_nb1: jax.Array, scheme: Scheme) -> jax.Array:
    """Mirror of `schemes._block_sq_error`: the same products, differences and halving sums, in order
    (the barrier keeps `q * scale - w` from being contracted into one fused multiply-add)."""
    d = jax.lax.optimization_barrier(_codes(w_nbk, scale_nb1, scheme) * scale_nb1) - w_nbk
    e = d * d
    while e.shape[-1] > 1:
        half = e.shape[-1] // 2
        e = e[..., :half] + e[..., half:]
    return e[..., 0]


def _searched_scales(w_nbk: jax.Array, amax: jax.Array, scheme: Scheme) -> jax.Array:
    """Mirror of `schemes._searched_scales` (the CLIP_GRID scale of least block error, first on a tie)."""
    best = _scales(amax, scheme)
    best_err = _block_sq_error(w_nbk, best[..., None], scheme)
    for alpha in CLIP_GRID[1:]:
        scale = _scales(amax * jnp.float32(alpha), scheme)
        err = _block_sq_error(w_nbk, scale[..., None], scheme)
        better = err < best_err
        best, best_err = jnp.where(better, scale, best), jnp.where(better, err, best_err)
    return best


def fake_quant_kn(w_kn: jax.Array, scheme: Scheme) -> jax.Array:
    """Quantize-dequantize [..., K, N] matmul weights (any lead axes), in f32."""
    *lead, k, n = w_kn.shape
    block = scheme.block or k
    if k % block:
        raise ValueError(f"K={k} is not divisible by the {scheme.label} block {block}")
    w_nbk = jnp.swapaxes(w_kn.astype(jnp.float32), -1, -2).reshape(*lead, n, k // block, block)
    amax = jnp.max(jnp.abs(w_nbk), axis=-1)
    scale = (_searched_scales(w_nbk, amax, scheme) if scheme.clip == "mse" else _scales(amax, scheme))[..., None]
    q = _codes(w_nbk, scale, scheme)
    return jnp.swapaxes((q * scale).reshape(*lead, n, k), -1, -2)


def fake_quant_weight(name: str, w: jax.Array, scheme: Scheme) -> jax.Array:
    """Weight `name` in its stored layout with every matmul it stacks fake-quantized (f32)."""
    view = matmul_view(name, w.shape)
    if view is None:
        raise ValueError(f"{name}: not a matmul weight, cannot quantize it")
    return from_kn(view, fake_quant_kn(to_kn(view, w), scheme))


def straight_through(w: jax.Array, w_hat: jax.Array) -> jax.Array:
    """Forward value exactly `w_hat`, gradient exactly the identity onto `w`."""
    return (w - jax.lax.stop_gradient(w)) + jax.lax.stop_gradient(w_hat.astype(w.dtype))


def fake_quant_tree(params: dict, recipe: Recipe, ste: bool = False) -> dict:
    """Mirror of `recipes.fake_quant_params` on a nested tree; `ste` keeps straight-through gradients."""
    flat = flatten(params)
    out = {}
    for name, w in flat.items():
        scheme = recipe.scheme_for(name, np.shape(w))
        if scheme is None:
            out[name] = w
            continue
        w_hat = fake_quant_weight(name, w, scheme)
        out[name] = straight_through(w, w_hat) if ste else w_hat
    return unflatten(out)
