"""Deterministic random parameters in numpy, so tests can write real-format checkpoints without a model."""

from __future__ import annotations

import numpy as np

from pg2edge.checkpoint.lazy import lazy_random_params
from pg2edge.checkpoint.validate import as_float_dtype
from pg2edge.config import ModelConfig


def random_params(cfg: ModelConfig, seed: int, dtype: object = np.float32,
                  scale: float = 0.02) -> dict[str, np.ndarray]:
    """Flat big_vision params: N(0, scale) weights/biases; LayerNorm scales 1 + noise, RMSNorm scales noise.

    Each tensor (each layer of a stacked one) has its own generator seeded by
    (seed, crc32(key)[, layer]), so values do not depend on iteration order and
    equal `lazy_random_params` exactly. Gemma's RMSNorm multiplies by
    `1 + scale`, SigLIP's LayerNorm by `scale`: both end up near 1.
    """
    target = as_float_dtype(np.float32 if dtype is None else dtype)
    return {key: lazy.materialize().astype(target, copy=False)
            for key, lazy in lazy_random_params(cfg, seed, np.float32, scale).items()}
