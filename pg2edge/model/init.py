"""Deterministic random parameters in JAX, for training from scratch.

Tensor i draws `jax.random.normal(split(key)[i], shape)`. With JAX's partitionable threefry (the default),
element j of a draw depends only on the key and j, so a tensor's values are the first elements of a longer flat
draw from its key: tensors draw from one jitted program per power-of-4 size, not one per shape (compiling a
threefry program per shape took 14 of the mini model's 15 s start), with the same values bit for bit.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.errors import Pg2EdgeError
from pg2edge.param_layout import param_shapes, unflatten

_UNIT_SCALE = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")


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


@functools.lru_cache(maxsize=None)
def _flat_normal(size: int):
    """One compiled standard-normal draw of `size` float32 values."""
    return jax.jit(lambda key: jax.random.normal(key, (size,), jnp.float32))


def _normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """`jax.random.normal(key, shape)`, as the first elements of a flat draw of the next power-of-4 size."""
    n = math.prod(shape)
    return np.asarray(_flat_normal(4 ** max(0, math.ceil(math.log(n, 4))))(key))[:n].reshape(shape)


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """A full nested param tree for `cfg`: norm scales neutral, biases zero, weights normal scaled by fan-in."""
    if not jax.config.jax_threefry_partitionable:
        raise Pg2EdgeError("init_params needs jax_threefry_partitionable (JAX's default): a draw's elements "
                           "then depend only on their index, which drawing by size relies on")
    shapes = param_shapes(cfg)
    flat = {}
    for k, (name, shape) in zip(jax.random.split(key, len(shapes)), shapes.items()):
        std = _std(name, shape)
        if std is None:
            values = np.full(shape, 1.0 if name.endswith(_UNIT_SCALE) else 0.0, np.float32)  # Gemma: 1 + scale
        else:
            values = _normal(k, shape) * np.float32(std)
        flat[name] = jnp.asarray(values).astype(dtype)
    return unflatten(flat)
