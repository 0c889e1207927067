"""Gemma 2 decoder: GQA attention with soft-caps, local/global layers, static KV cache.

One function, `decode_layers`, serves training (`cache=None`), prefill and
single-token decode: new keys/values are written into a fixed-capacity cache at
each row's start slot, and queries attend over the whole cache under a boolean
mask. The three mask builders below encode big_vision's prefix-LM rule and
HF's sliding window (local layers: same prefix block, or causal within the
window).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pg2edge.config import TextConfig
from pg2edge.model.layers import apply_rope, gelu_tanh, rms_norm, soft_cap


class KVCache(NamedTuple):
    """Per-layer keys and values, each [B, K, S, H] with static capacity S."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


def init_cache(cfg: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An all-zero cache of capacity `max_len` for every layer."""
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.depth))
    return KVCache(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.depth)))


class Masks(NamedTuple):
    """Boolean [B, T, S] visibility for global and sliding-window layers."""

    full: jax.Array
    local: jax.Array


def training_masks(cfg: TextConfig, mask_ar_bt: jax.Array, input_mask_bt: jax.Array) -> Masks:
    """big_vision `make_attn_mask`: q sees k iff cumsum(ar)[q] >= cumsum(ar)[k] and k is real."""
    group = jnp.cumsum(mask_ar_bt.astype(jnp.int32), axis=1)
    full = (group[:, None, :] <= group[:, :, None]) & input_mask_bt[:, None, :].astype(bool)
    pos = jnp.arange(mask_ar_bt.shape[1])
    in_window = (pos[:, None] - pos[None, :]) < cfg.sliding_window
    same_block = group[:, None, :] == group[:, :, None]
    return Masks(full=full, local=full & (same_block | in_window[None]))


def prefill_masks(valid_len_b: jax.Array, num_queries: int, capacity: int) -> Masks:
    """Every query sees the whole valid prompt (one bidirectional prefix block)."""
    slot = jnp.arange(capacity)
    visible = slot[None, :] < valid_len_b[:, None]  # [B, S]
    full = jnp.broadcast_to(visible[:, None, :], (visible.shape[0], num_queries, capacity))
    return Masks(full=full, local=full)


def decode_masks(cfg: TextConfig, pos_b: jax.Array, capacity: int) -> Masks:
    """A suffix token at `pos` sees slots <= pos; local layers only the last `window`."""
    slot = jnp.arange(capacity)[None, :]
    full = slot <= pos_b[:, None]
    local = full & (pos_b[:, None] - slot < cfg.sliding_window)
    return Masks(full=full[:, None, :], local=local[:, None, :])


def _write(cache_bksh: jax.Array, new_bksh: jax.Array, start_b: jax.Array) -> jax.Array:
    """Write each row's new entries at its own start slot (static shapes, no copy in XLA)."""
    def one(c, n, s):
        return jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (0, s, 0))
    return jax.vmap(one)(cache_bksh, new_bksh, start_b)


def _attention(p: dict, cfg: TextConfig, x_btd: jax.Array, pos_bt: jax.Array, mask_bts: jax.Array,
               kv: tuple[jax.Array, jax.Array] | None, start_b: jax.Array | None):
    """GQA self-attention; returns the output and the updated (k, v) of this layer."""
    q = jnp.einsum("btd,ndh->btnh", x_btd, p["q_einsum"]["w"])
    k = jnp.einsum("btd,kdh->bkth", x_btd, p["kv_einsum"]["w"][0])
    v = jnp.einsum("btd,kdh->bkth", x_btd, p["kv_einsum"]["w"][1])
    q = apply_rope(q, pos_bt, cfg.rope_base)
    k = apply_rope(k.transpose(0, 2, 1, 3), pos_bt, cfg.rope_base).transpose(0, 2, 1, 3)
    if kv is not None:
        k = _write(kv[0], k, start_b)
        v = _write(kv[1], v, start_b)
    b, t, n, h = q.shape
    q = q.reshape(b, t, cfg.num_kv_heads, n // cfg.num_kv_heads, h)
    logits = jnp.einsum("btkgh,bksh->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
    logits = soft_cap(logits * cfg.query_pre_attn_scalar ** -0.5, cfg.attn_logit_softcap)
    logits = jnp.where(mask_bts[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(x_btd.dtype)
    o = jnp.einsum("bkgts,bksh->btkgh", probs, v.astype(x_btd.dtype)).reshape(b, t, n, h)
    return jnp.einsum("btnh,nhd->btd", o, p["attn_vec_einsum"]["w"]), (k, v)


def _mlp(p: dict, x_btd: jax.Array) -> jax.Array:
    """GeGLU: gelu(x W_gate) * (x W_up) @ W_down."""
    gate = gelu_tanh(x_btd @ p["gating_einsum"][0])
    return (gate * (x_btd @ p["gating_einsum"][1])) @ p["linear"]


def decode_layers(llm: dict, cfg: TextConfig, x_btd: jax.Array, pos_bt: jax.Array, masks: Masks,
                  cache: KVCache | None = None, start_b: jax.Array | None = None
                  ) -> tuple[jax.Array, KVCache | None]:
    """Run every decoder layer and the final norm; update the cache if one is given."""
    layers = llm["layers"]
    new_k, new_v = [], []
    for i in range(cfg.depth):
        p = jax.tree.map(lambda a: a[i], layers)
        mask = masks.local if cfg.is_local_layer(i) else masks.full
        kv = None if cache is None else (cache.k[i], cache.v[i])
        y = rms_norm(x_btd, p["pre_attention_norm"]["scale"], cfg.norm_eps)
        y, (k, v) = _attention(p["attn"], cfg, y, pos_bt, mask, kv, start_b)
        x_btd = x_btd + rms_norm(y, p["post_attention_norm"]["scale"], cfg.norm_eps)
        y = rms_norm(x_btd, p["pre_ffw_norm"]["scale"], cfg.norm_eps)
        y = _mlp(p["mlp"], y)
        x_btd = x_btd + rms_norm(y, p["post_ffw_norm"]["scale"], cfg.norm_eps)
        new_k.append(k)
        new_v.append(v)
    x_btd = rms_norm(x_btd, llm["final_norm"]["scale"], cfg.norm_eps)
    new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
    return x_btd, new_cache


def embed_tokens(llm: dict, cfg: TextConfig, tokens_bt: jax.Array) -> jax.Array:
    """Token ids -> embeddings scaled by sqrt(width) (in the embedding's dtype)."""
    table = llm["embedder"]["input_embedding"]
    return table[tokens_bt] * jnp.sqrt(cfg.width).astype(table.dtype)


def lm_head(llm: dict, cfg: TextConfig, x_btd: jax.Array) -> jax.Array:
    """Tied LM head with the final soft-cap; logits in f32."""
    table = llm["embedder"]["input_embedding"]
    logits = jnp.einsum("...d,vd->...v", x_btd, table.astype(x_btd.dtype)).astype(jnp.float32)
    return soft_cap(logits, cfg.final_logit_softcap)
