"""Next-token choice from logits, in numpy: shared by the JAX `generate` and the runtime.

Because both call this one function with the same seed, a sampled stream from
an exported bundle can be compared token for token with the JAX model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_k 0 and top_p 1 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, found {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, found {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], found {self.top_p}")


def new_rng(cfg: SamplingConfig) -> np.random.Generator:
    """The generator every sampler draws from, seeded from the config."""
    return np.random.Generator(np.random.PCG64(cfg.seed))


def choose(logits_bv: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """Pick one token per row: argmax, or sample after temperature / top-k / top-p."""
    logits = np.asarray(logits_bv, dtype=np.float64)
    if cfg.temperature == 0.0:
        return logits.argmax(-1).astype(np.int32)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = np.sort(logits, axis=-1)[:, -min(cfg.top_k, logits.shape[-1])][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if cfg.top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, -1)
        keep_sorted = (np.cumsum(sorted_p, -1) - sorted_p) < cfg.top_p  # always keeps the first
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, -1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    u = rng.random(probs.shape[0])[:, None]
    idx = (np.cumsum(probs, -1) < u).sum(-1)
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int32)
