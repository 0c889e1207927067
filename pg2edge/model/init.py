"""Deterministic random parameters for training from scratch, drawn with numpy per tensor.

Each tensor has its own generator, seeded by the JAX key's words and the crc32 of its name: the values do not
depend on iteration order, and no XLA program is compiled per shape (drawing with `jax.random` compiled one
threefry program per distinct shape, 14 s of the mini model's 15 s start).
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes, unflatten

_UNIT_SCALE = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")


def _init_one(seed: tuple[int, ...], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Norm scales neutral, biases zero, weights scaled normal by fan-in."""
    if name.endswith(_UNIT_SCALE):
        return np.ones(shape, np.float32)
    if name.endswith(("bias", "scale")):  # Gemma norms use (1 + scale): zero is neutral
        return np.zeros(shape, np.float32)
    if name == "llm/embedder/input_embedding":
        std = shape[-1] ** -0.5
    elif name == "img/pos_embedding":
        std = 0.02
    else:
        std = _fan_in(name, shape) ** -0.5
    rng = np.random.default_rng([*seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape, np.float32) * np.float32(std)


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
    """A full nested param tree for `cfg` (for full-size shapes alone, use `param_layout.param_shapes`)."""
    words = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    seed = tuple(int(w) for w in words.reshape(-1))
    return unflatten({name: jnp.asarray(_init_one(seed, name, shape), dtype)
                      for name, shape in param_shapes(cfg).items()})
