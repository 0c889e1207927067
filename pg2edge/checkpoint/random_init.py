"""Deterministic random parameters in numpy, so tests can write real-format checkpoints without a model."""

from __future__ import annotations

import zlib

import numpy as np

from pg2edge.checkpoint.validate import as_float_dtype
from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes

_LAYERNORM_SCALES = ("LayerNorm_0/scale", "LayerNorm_1/scale", "encoder_norm/scale")


def random_params(cfg: ModelConfig, seed: int, dtype: object = np.float32,
                  scale: float = 0.02) -> dict[str, np.ndarray]:
    """Flat big_vision params: N(0, scale) weights/biases; LayerNorm scales 1 + noise, RMSNorm scales noise.

    Each tensor has its own generator seeded by (seed, crc32(key)), so values
    do not depend on iteration order. Gemma's RMSNorm multiplies by
    `1 + scale`, SigLIP's LayerNorm by `scale`: both end up near 1.
    """
    target = as_float_dtype(np.float32 if dtype is None else dtype)
    params = {}
    for key, shape in param_shapes(cfg).items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        if key.endswith(_LAYERNORM_SCALES):
            values += np.float32(1.0)
        params[key] = values.astype(target)
    return params
