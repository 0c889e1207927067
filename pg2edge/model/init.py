"""Deterministic random parameters in JAX, for training from scratch and for shape-only builds."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes, unflatten

_UNIT_SCALE = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")


def _init_one(key: jax.Array, name: str, shape: tuple[int, ...], dtype) -> jax.Array:
    """Norm scales neutral, biases zero, weights scaled normal by fan-in."""
    if name.endswith(_UNIT_SCALE):
        return jnp.ones(shape, dtype)
    if name.endswith(("bias", "scale")):  # Gemma norms use (1 + scale): zero is neutral
        return jnp.zeros(shape, dtype)
    if name == "llm/embedder/input_embedding":
        return (jax.random.normal(key, shape, jnp.float32) * shape[-1] ** -0.5).astype(dtype)
    if name == "img/pos_embedding":
        return (jax.random.normal(key, shape, jnp.float32) * 0.02).astype(dtype)
    fan_in = _fan_in(name, shape)
    return (jax.random.normal(key, shape, jnp.float32) * fan_in ** -0.5).astype(dtype)


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    """Contraction size of each weight in the big_vision layout."""
    if name == "img/embedding/kernel":
        return shape[0] * shape[1] * shape[2]
    if name.endswith(("out/kernel", "attn_vec_einsum/w")):
        return shape[-3] * shape[-2]
    if name.endswith(("query/kernel", "key/kernel", "value/kernel")):
        return shape[-3]
    return shape[-2]


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """A full nested param tree for `cfg` (use under `jax.eval_shape` for full-size shapes)."""
    shapes = param_shapes(cfg)
    keys = jax.random.split(key, len(shapes))
    flat = {name: _init_one(k, name, shape, dtype) for k, (name, shape) in zip(keys, shapes.items())}
    return unflatten(flat)
