"""LoRA: rank-r adapters on the decoder's attention and MLP matmuls, merged into plain weights.

Each adapted weight W (seen as its per-layer [K, N] matmuls, `views.to_kn`)
becomes `W + (alpha / r) * A @ B` with A [.., K, r] ~ N(0, 1/K) and B = 0, so
training starts exactly at the base model. The merge is applied inside the
loss (the model is called with ordinary weights: no layer is re-implemented)
and once more at export, so the output directory is a plain checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize.matmul_view import MatmulView, matmul_view
from pg2edge.train.views import from_kn

TARGETS = (
    "llm/layers/attn/q_einsum/w",
    "llm/layers/attn/kv_einsum/w",
    "llm/layers/attn/attn_vec_einsum/w",
    "llm/layers/mlp/gating_einsum",
    "llm/layers/mlp/linear",
)


@dataclass(frozen=True)
class LoraConfig:
    """Adapter rank and alpha (the delta is scaled by alpha / rank)."""

    rank: int = 8
    alpha: float = 16.0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _views(params: dict) -> dict[str, MatmulView]:
    flat = flatten(params)
    return {name: matmul_view(name, flat[name].shape) for name in TARGETS if name in flat}


def init_lora(params: dict, cfg: LoraConfig, key: jax.Array) -> dict:
    """Adapters for every target weight: `{target path: {"a": [.., K, r], "b": [.., r, N]}}`, nested (f32)."""
    views = _views(params)
    keys = jax.random.split(key, len(views))
    out = {}
    for k, (name, view) in zip(keys, views.items(), strict=True):
        a = jax.random.normal(k, view.lead_shape + (view.k, cfg.rank), jnp.float32) * view.k ** -0.5
        out[f"{name}/a"] = a
        out[f"{name}/b"] = jnp.zeros(view.lead_shape + (cfg.rank, view.n), jnp.float32)
    return unflatten(out)


def merge_lora(params: dict, lora: dict, cfg: LoraConfig) -> dict:
    """`params` with each adapted weight replaced by `W + scale * A @ B` (in W's dtype); no-op for `{}`."""
    if not lora:
        return params
    flat = flatten(params)
    adapters = flatten(lora)
    for name, view in _views(params).items():
        a, b = adapters[f"{name}/a"], adapters[f"{name}/b"]
        delta = from_kn(view, jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST) * cfg.scale)
        flat[name] = (flat[name].astype(jnp.float32) + delta).astype(flat[name].dtype)
    return unflatten(flat)
