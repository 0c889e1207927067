"""Gemma 2 decoder: GQA attention with soft-caps, local/global layers, static KV cache.

One function, `decode_layers`, serves training, prefill and single-token
decode: queries attend over (fixed-capacity cache slots, this call's tokens)
under boolean masks, and the call returns only its own new keys/values, which
the cache owner writes in place. The three mask builders below encode
big_vision's prefix-LM rule and HF's sliding window (local layers: same prefix
block, or causal within the window). With `write_at`, each layer instead
writes its chunk into the cache and attends over it (`cached_attention`, the
same visibility rule): the one-graph `step` that ONNX lowers to
GroupQueryAttention over a cache updated in place.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pg2edge.config import TextConfig
from pg2edge.model.layers import apply_rope, flat_rows, gelu_tanh, rms_norm, soft_cap, softmax


class KVCache(NamedTuple):
    """Per-layer keys and values, each [B, K, S, H] with static capacity S."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


class KVChunk(NamedTuple):
    """The keys and values a graph call produced, each [B, K, T, H] per layer.

    Graphs return only these; whoever owns the cache writes them in place
    (`write_cache` here, an IO-bound buffer in the runtime), so no graph ever
    copies the whole cache.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def init_cache(cfg: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An all-zero cache of capacity `max_len` for every layer."""
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    return KVCache(k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.depth)),
                   v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.depth)))


def _write_rows(cache_bksh: jax.Array, new_bkth: jax.Array, start_b: jax.Array) -> jax.Array:
    """Each row's [K, T, H] chunk written at its own start slot (in place under XLA donation)."""
    def one(c, n, s):
        return jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (0, s, 0))

    return jax.vmap(one)(cache_bksh, new_bkth, start_b)


def write_cache(cache: KVCache, chunk: KVChunk, start_b: jax.Array) -> KVCache:
    """Write each row's chunk at its own start slot, every layer."""
    return KVCache(k=tuple(_write_rows(c, n, start_b) for c, n in zip(cache.k, chunk.k)),
                   v=tuple(_write_rows(c, n, start_b) for c, n in zip(cache.v, chunk.v)))


class Masks(NamedTuple):
    """Boolean visibility for global and sliding-window layers.

    `new_*` [B, T, T]: among the tokens of this call; `old_*` [B, T, S]: of
    this call's tokens onto cache slots (None when no cache is read).
    """

    new_full: jax.Array
    new_local: jax.Array
    old_full: jax.Array | None = None
    old_local: jax.Array | None = None

    def for_layer(self, cfg: TextConfig, layer: int) -> tuple[jax.Array, jax.Array | None]:
        if cfg.is_local_layer(layer):
            return self.new_local, self.old_local
        return self.new_full, self.old_full


def training_masks(cfg: TextConfig, mask_ar_bt: jax.Array, input_mask_bt: jax.Array) -> Masks:
    """big_vision `make_attn_mask`: q sees k iff cumsum(ar)[q] >= cumsum(ar)[k] and k is real."""
    group = jnp.cumsum(mask_ar_bt.astype(jnp.int32), axis=1)
    full = (group[:, None, :] <= group[:, :, None]) & input_mask_bt[:, None, :].astype(bool)
    pos = jnp.arange(mask_ar_bt.shape[1])
    in_window = (pos[:, None] - pos[None, :]) < cfg.sliding_window
    same_block = group[:, None, :] == group[:, :, None]
    return Masks(new_full=full, new_local=full & (same_block | in_window[None]))


def prefill_masks(valid_len_b: jax.Array, num_queries: int) -> Masks:
    """Every query sees the whole valid prompt (one bidirectional prefix block, no window)."""
    visible = jnp.arange(num_queries)[None, :] < valid_len_b[:, None]  # [B, P]
    full = jnp.broadcast_to(visible[:, None, :], (visible.shape[0], num_queries, num_queries))
    return Masks(new_full=full, new_local=full)


def decode_masks(cfg: TextConfig, pos_b: jax.Array, capacity: int) -> Masks:
    """A suffix token at `pos` sees itself and slots < pos; local layers only the last `window`."""
    return chunk_masks(cfg, pos_b, jnp.ones_like(pos_b), 1, capacity)


def chunk_masks(cfg: TextConfig, start_b: jax.Array, valid_b: jax.Array, num_tokens: int, capacity: int) -> Masks:
    """A chunk at cache slots [start, start + n): its valid tokens see each other (one prefix block) and the
    cache slots before `start` (local layers: within the window).

    With start 0 this is `prefill_masks` (no cache slot visible); with one token it is `decode_masks`.
    """
    idx = jnp.arange(num_tokens)
    visible = idx[None, :] < valid_b[:, None]  # [B, n]
    new = jnp.broadcast_to(visible[:, None, :], (visible.shape[0], num_tokens, num_tokens))
    slot = jnp.arange(capacity)[None, None, :]
    q_pos = (start_b[:, None] + idx[None, :])[:, :, None]  # [B, n, 1]
    old_full = jnp.broadcast_to(slot < start_b[:, None, None], (visible.shape[0], num_tokens, capacity))
    old_local = old_full & (q_pos - slot < cfg.sliding_window)
    return Masks(new_full=new, new_local=new, old_full=old_full, old_local=old_local)


def _project_qkv(p: dict, cfg: TextConfig, x_btd: jax.Array, pos_bt: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries [B,T,N,H] and keys [B,T,K,H] (both rotated), values [B,T,K,H]."""
    q = jnp.einsum("btd,ndh->btnh", x_btd, p["q_einsum"]["w"])
    k = jnp.einsum("btd,kdh->btkh", x_btd, p["kv_einsum"]["w"][0])
    v = jnp.einsum("btd,kdh->btkh", x_btd, p["kv_einsum"]["w"][1])
    return apply_rope(q, pos_bt, cfg.rope_base), apply_rope(k, pos_bt, cfg.rope_base), v


def _attend(q_btnh: jax.Array, blocks: list[tuple[jax.Array, jax.Array, jax.Array]], scale, cap_fn) -> jax.Array:
    """GQA attention core: queries [B,T,N,H] over key/value blocks (keys, values [B,K,S_i,H], visibility
    [B,T,S_i]) under one softmax; the blocks are never concatenated (no copy of a cache). Returns [B,T,N,H]."""
    b, t, n, h = q_btnh.shape
    kv_heads = blocks[0][0].shape[1]
    q = q_btnh.reshape(b, t, kv_heads, n // kv_heads, h)
    neg = jnp.finfo(jnp.float32).min
    logits = [jnp.where(mask[:, None, None], cap_fn(
        jnp.einsum("btkgh,bksh->bkgts", q, keys.astype(q.dtype)).astype(jnp.float32) * scale), neg)
        for keys, _, mask in blocks]
    probs = softmax(jnp.concatenate(logits, axis=-1) if len(logits) > 1 else logits[0]).astype(q.dtype)
    o, start = 0, 0
    for keys, values, _ in blocks:
        size = keys.shape[2]
        o = o + jnp.einsum("bkgts,bksh->btkgh", probs[..., start:start + size], values.astype(q.dtype))
        start += size
    return o.reshape(b, t, n, h)


def _attention(p: dict, cfg: TextConfig, x_btd: jax.Array, pos_bt: jax.Array,
               mask_new: jax.Array, mask_old: jax.Array | None, kv_old: tuple[jax.Array, jax.Array] | None):
    """GQA self-attention over (cache slots, this call's tokens); returns output and new (k, v) [B,K,T,H]."""
    q, k, v = _project_qkv(p, cfg, x_btd, pos_bt)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B,K,T,H]
    blocks = ([] if kv_old is None else [(kv_old[0], kv_old[1], mask_old)]) + [(k, v, mask_new)]
    o = _attend(q, blocks, cfg.query_pre_attn_scalar ** -0.5, lambda x: soft_cap(x, cfg.attn_logit_softcap))
    return _attention_out(p, o), (k, v)


def _attention_out(p: dict, o_btnh: jax.Array) -> jax.Array:
    return jnp.einsum("btnh,nhd->btd", o_btnh, p["attn_vec_einsum"]["w"])


@jax.jit
def cached_attention(q_btnh: jax.Array, k_btkh: jax.Array, v_btkh: jax.Array, k_cache: jax.Array,
                     v_cache: jax.Array, start_b: jax.Array, scale: jax.Array, softcap: jax.Array,
                     window: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GQA attention of a chunk at cache slots [start, start + T) over the cache with the chunk written in.

    Returns (output [B,T,N,H], k_cache, v_cache [B,K,S,H] holding the chunk at its slots). The chunk's tokens
    see each other (one prefix block) and the slots before `start` that are within `window` of the query
    position. One named call, so the ONNX lowering emits it as one `GroupQueryAttention` node that writes
    the chunk into the bound cache buffer and reads only the filled slots.
    """
    k_cache = _place_chunk(k_cache, k_btkh, start_b)
    v_cache = _place_chunk(v_cache, v_btkh, start_b)
    t, slots = q_btnh.shape[1], k_cache.shape[2]
    slot = jnp.arange(slots, dtype=jnp.int32)[None, None, :]
    q_pos = (start_b[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :])[:, :, None]  # [B,T,1]
    start = start_b[:, None, None]
    visible = (slot < start + t) & ((slot >= start) | (q_pos - slot < window))  # [B,T,S]
    cap = jnp.where(softcap > 0, softcap, 1.0)  # traced: the lowering reads it as the node's attribute

    def cap_fn(x):
        return jnp.where(softcap > 0, cap * jnp.tanh(x / cap), x)

    return _attend(q_btnh, [(k_cache, v_cache, visible)], scale, cap_fn), k_cache, v_cache


def _place_chunk(cache_bksh: jax.Array, chunk_btkh: jax.Array, start_b: jax.Array) -> jax.Array:
    """The cache with slots [start, start + T) replaced by the chunk: a select over the slots, so it traces with
    T symbolic (a dynamic_update_slice would need T <= S proven)."""
    t, slots = chunk_btkh.shape[1], cache_bksh.shape[2]
    rel = jnp.arange(slots, dtype=jnp.int32)[None, :] - start_b[:, None]  # [B, S]
    index = jnp.broadcast_to(jnp.clip(rel, 0, t - 1)[:, :, None, None], (rel.shape[0], slots) + chunk_btkh.shape[2:])
    picked = jnp.take_along_axis(chunk_btkh, index, axis=1).transpose(0, 2, 1, 3)  # [B, K, S, H]
    inside = (rel >= 0) & (rel < t)
    return jnp.where(inside[:, None, :, None], picked.astype(cache_bksh.dtype), cache_bksh)


def _attention_in_place(p: dict, cfg: TextConfig, layer: int, x_btd: jax.Array, pos_bt: jax.Array,
                        start_b: jax.Array, kv: tuple[jax.Array, jax.Array]):
    """GQA self-attention that writes this call's keys/values into `kv` and reads them back from it."""
    q, k, v = _project_qkv(p, cfg, x_btd, pos_bt)
    window = cfg.sliding_window if cfg.is_local_layer(layer) else jnp.iinfo(jnp.int32).max
    o, k_cache, v_cache = cached_attention(q, k, v, *kv, start_b, jnp.float32(cfg.query_pre_attn_scalar ** -0.5),
                                           jnp.float32(cfg.attn_logit_softcap or 0.0), jnp.int32(window))
    return _attention_out(p, o.astype(x_btd.dtype)), (k_cache, v_cache)


def _mlp(p: dict, x_btd: jax.Array) -> jax.Array:
    """GeGLU: gelu(x W_gate) * (x W_up) @ W_down, on the rows flattened to 2-D (`flat_rows`)."""
    x = flat_rows(x_btd)
    gate, up = x @ p["gating_einsum"][0], x @ p["gating_einsum"][1]  # both first: exporters fuse them
    return ((gelu_tanh(gate) * up) @ p["linear"]).reshape(x_btd.shape)


def decode_layers(llm: dict, cfg: TextConfig, x_btd: jax.Array, pos_bt: jax.Array, masks: Masks | None,
                  cache: KVCache | None = None, layers: range | None = None, final_norm: bool = True,
                  write_at: jax.Array | None = None, outputs_from: int = 0) -> tuple[jax.Array, KVChunk | KVCache]:
    """Run decoder layers `layers` (default: all), then the final norm if `final_norm`, reading `cache` if given.

    `llm["layers"]` and `cache` hold exactly the run layers, in order: a staged
    export runs the stack in groups, each with its own slice of the weights
    and of the cache (the absolute index still picks local or global
    attention). Returns the hidden states and this call's keys/values (not
    yet in the cache); with `write_at` [B] (the chunk's first slot; `masks`
    unused) every layer writes them into `cache` first and attends over it
    (`cached_attention`), and the updated cache is returned instead.

    `outputs_from`: hidden states are returned for positions >= it only. The last
    layer still attends over every position but runs its residual and MLP on those
    rows alone (training reads no output at an image position: 64 of a mini
    sequence's 98 rows skip the largest matmuls of one layer in four).
    """
    layers = range(cfg.depth) if layers is None else layers
    new_k, new_v = [], []
    for j, i in enumerate(layers):
        p = jax.tree.map(lambda a: a[j], llm["layers"])
        kv_old = None if cache is None else (cache.k[j], cache.v[j])
        y = rms_norm(x_btd, p["pre_attention_norm"]["scale"], cfg.norm_eps)
        if write_at is not None:
            y, (k, v) = _attention_in_place(p["attn"], cfg, i, y, pos_bt, write_at, kv_old)
        else:
            y, (k, v) = _attention(p["attn"], cfg, y, pos_bt, *masks.for_layer(cfg, i), kv_old)
        if j == len(layers) - 1 and outputs_from:
            x_btd, y = x_btd[:, outputs_from:], y[:, outputs_from:]
        x_btd = x_btd + rms_norm(y, p["post_attention_norm"]["scale"], cfg.norm_eps)
        y = rms_norm(x_btd, p["pre_ffw_norm"]["scale"], cfg.norm_eps)
        y = _mlp(p["mlp"], y)
        x_btd = x_btd + rms_norm(y, p["post_ffw_norm"]["scale"], cfg.norm_eps)
        new_k.append(k)
        new_v.append(v)
    if final_norm:
        x_btd = apply_final_norm(llm, cfg, x_btd)
    kv = (KVCache if write_at is not None else KVChunk)(k=tuple(new_k), v=tuple(new_v))
    return x_btd, kv


def apply_final_norm(llm: dict, cfg: TextConfig, x_btd: jax.Array) -> jax.Array:
    """The RMS norm after the last layer."""
    return rms_norm(x_btd, llm["final_norm"]["scale"], cfg.norm_eps)


def embed_tokens(llm: dict, cfg: TextConfig, tokens_bt: jax.Array) -> jax.Array:
    """Token ids -> embeddings scaled by sqrt(width) (in the embedding's dtype)."""
    table = llm["embedder"]["input_embedding"]
    return jnp.asarray(table)[tokens_bt] * jnp.sqrt(cfg.width).astype(table.dtype)


def lm_head(llm: dict, cfg: TextConfig, x_btd: jax.Array) -> jax.Array:
    """Tied LM head with the final soft-cap; logits in f32."""
    table = llm["embedder"]["input_embedding"]
    logits = jnp.einsum("...d,vd->...v", x_btd, table.astype(x_btd.dtype)).astype(jnp.float32)
    return soft_cap(logits, cfg.final_logit_softcap)
