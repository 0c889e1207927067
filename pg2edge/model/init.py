"""Deterministic random parameters in JAX, for training from scratch.

Tensor i draws `jax.random.normal(split(key)[i], shape)`. With JAX's partitionable threefry (the default),
element j of a draw depends only on the key and j, so a tensor's values are the first elements of a longer flat
draw from its key: small tensors draw from one jitted program per power-of-4 size, not one per shape, with the
same values bit for bit (compiling a threefry program per shape took 12-19 s of the tower stage's start; now
2-3 s). Tensors above FLAT_LIMIT elements draw at their own size, so a full-size model draws no more than it keeps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pg2edge.config import ModelConfig
from pg2edge.errors import Pg2EdgeError
from pg2edge.param_layout import param_shapes, unflatten

_UNIT_SCALE = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")
FLAT_LIMIT = 1 << 20  # elements: larger tensors draw at their own size


def _std(name: str, shape: tuple[int, ...]) -> float | None:
    """The normal's scale for a weight; None for norm scales and biases (constant)."""
    if name.endswith(("bias", "scale")):
        return None
    if name == "llm/embedder/input_embedding":
        return shape[-1] ** -0.5
    if name == "img/pos_embedding":
        return 0.02
    return _fan_in(name, shape) ** -0.5


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    """Contraction size of each weight in the big_vision layout."""
    if name == "img/embedding/kernel":
        return shape[0] * shape[1] * shape[2]
    if name.endswith(("out/kernel", "attn_vec_einsum/w")):
        return shape[-3] * shape[-2]
    if name.endswith(("query/kernel", "key/kernel", "value/kernel")):
        return shape[-3]
    return shape[-2]


def _draw_size(n: int) -> int:
    """The flat draw a tensor of `n` elements takes its values from: the next power of 4 up to FLAT_LIMIT."""
    return n if n > FLAT_LIMIT else 1 << 2 * -(-(n - 1).bit_length() // 2)


def _normal(draws: dict[int, Callable], key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.normal(key, shape)`, as the first elements of a flat draw (compiled once per size in `draws`;
    inside a trace, such as `finetune --random-init`'s jitted init, the draw is inlined like any other op)."""
    n = math.prod(shape)
    size = _draw_size(n)
    if size not in draws:
        draws[size] = jax.jit(functools.partial(jax.random.normal, shape=(size,), dtype=jnp.float32))
    return draws[size](key)[:n].reshape(shape)


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """A full nested param tree for `cfg`: norm scales neutral, biases zero, weights normal scaled by fan-in."""
    if not jax.config.jax_threefry_partitionable:
        raise Pg2EdgeError("init_params needs jax_threefry_partitionable (JAX's default): a draw's elements "
                           "then depend only on their index, which drawing by size relies on")
    shapes = param_shapes(cfg)
    flat, draws = {}, {}
    for k, (name, shape) in zip(jax.random.split(key, len(shapes)), shapes.items()):
        std = _std(name, shape)
        if std is None:
            values = jnp.full(shape, 1.0 if name.endswith(_UNIT_SCALE) else 0.0, jnp.float32)  # Gemma: 1 + scale
        else:
            values = _normal(draws, k, shape) * jnp.float32(std)
        flat[name] = values.astype(dtype)
    return unflatten(flat)
