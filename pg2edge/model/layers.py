"""Numerics shared by both towers: norms, activations, soft-capping, RoPE.

Each is written once, in float32 where the references compute in float32
(norm statistics, softmax, RoPE), and cast back to the activation dtype.

The norms, the GELU and the softmax are `jax.jit` functions, so a traced graph
shows each as one named call (`pjit[name=rms_norm]`): inside a training step
XLA inlines them as usual, while the ONNX lowering can map each call to the
one standard operator that computes it (`RMSNormalization`, `Gelu`, ...)
instead of a dozen elementwise nodes. `eps` is an argument, not a constant,
so the call carries it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """SigLIP's LayerNorm, statistics in f32."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


@jax.jit
def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """Gemma's RMSNorm with the `(1 + scale)` parametrization, in f32."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def flat_rows(x: jax.Array) -> jax.Array:
    """[..., D] -> [rows, D] before an MLP's matmuls: XLA:CPU differentiates a 3-D dot fused with GELU ~3x
    slower than the same dot on 2-D rows (the training step's largest cost); the values are unchanged."""
    return x.reshape(-1, x.shape[-1])


@jax.jit
def gelu_tanh(x: jax.Array) -> jax.Array:
    """The tanh-approximated GELU both towers use."""
    return jax.nn.gelu(x, approximate=True)


@jax.jit
def softmax(x: jax.Array) -> jax.Array:
    """Softmax over the last axis (attention probabilities), in the input's dtype."""
    return jax.nn.softmax(x, axis=-1)


def soft_cap(x: jax.Array, cap: float) -> jax.Array:
    """`cap * tanh(x / cap)`; a cap of 0 disables it (big_vision transfer configs)."""
    if not cap:
        return x
    return cap * jnp.tanh(x / cap)


def apply_rope(x_btnh: jax.Array, positions_bt: jax.Array, base: float) -> jax.Array:
    """Rotary embedding in split-half form (HF `rotate_half`, big_vision `apply_rope`)."""
    head_dim = x_btnh.shape[-1]
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim))
    angles = positions_bt.astype(jnp.float32)[..., None] * inv_freq  # [B,T,half]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    xf = x_btnh.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_btnh.dtype)
