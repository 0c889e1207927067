"""PaliGemma 2 = SigLIP image tokens + Gemma 2 prefix-LM: the graph-split entry points.

`encode_image`, `embed`, `prefill` and `decode_step` are exactly the parts
the exporters trace (DESIGN §3); `forward` is the training graph. They share
`gemma2.decode_layers`, so there is one model definition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg2edge.config import ModelConfig
from pg2edge.model import gemma2, siglip
from pg2edge.model.gemma2 import KVCache, KVChunk, init_cache, write_cache  # noqa: F401  (public API)


def encode_image(params: dict, cfg: ModelConfig, pixels_bhwc: jax.Array) -> jax.Array:
    """Pixels [B,R,R,3] in [-1,1] -> projected image embeddings [B, N_img, D] (not scaled)."""
    return siglip.encode(params["img"], cfg.vision, pixels_bhwc)


def embed(params: dict, cfg: ModelConfig, tokens_bt: jax.Array) -> jax.Array:
    """Text tokens -> scaled embeddings [B, T, D]."""
    return gemma2.embed_tokens(params["llm"], cfg.text, tokens_bt)


def prefill(params: dict, cfg: ModelConfig, embeds_bpd: jax.Array, valid_len_b: jax.Array
            ) -> tuple[jax.Array, KVChunk]:
    """Run a padded prompt (image + prefix embeddings) from an empty cache.

    Returns the logits [B, V] at each row's last valid position and the keys/values
    [B, K, P, H] of all P positions, to be written at cache slots [0, P) (slots >=
    valid_len are masked out by every later step).
    """
    b, p, _ = embeds_bpd.shape
    pos_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    masks = gemma2.prefill_masks(valid_len_b, p)
    x, chunk = gemma2.decode_layers(params["llm"], cfg.text, embeds_bpd.astype(_dtype(params)), pos_bp, masks)
    # one-hot pick of the last valid row: a matmul, so exported graphs need no gather
    last_bp = jax.nn.one_hot(valid_len_b - 1, p, dtype=x.dtype)
    last = jnp.einsum("bp,bpd->bd", last_bp, x)
    return gemma2.lm_head(params["llm"], cfg.text, last), chunk


def decode_step(params: dict, cfg: ModelConfig, token_b: jax.Array, pos_b: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVChunk]:
    """One token at position `pos` (its cache slot) -> next-token logits [B, V] and its keys/values."""
    x = embed(params, cfg, token_b[:, None])
    masks = gemma2.decode_masks(cfg.text, pos_b, cache.capacity)
    x, chunk = gemma2.decode_layers(params["llm"], cfg.text, x, pos_b[:, None], masks, cache)
    return gemma2.lm_head(params["llm"], cfg.text, x[:, 0]), chunk


def forward(params: dict, cfg: ModelConfig, pixels_bhwc: jax.Array, tokens_bt: jax.Array,
            mask_ar_bt: jax.Array, input_mask_bt: jax.Array) -> jax.Array:
    """Training graph: logits [B, T, V] for the text positions (image positions dropped).

    `mask_ar` is 0 on prefix tokens and 1 on suffix tokens (image tokens are
    prepended with 0); `input_mask` is 0 on padding.
    """
    img = encode_image(params, cfg, pixels_bhwc)
    txt = embed(params, cfg, tokens_bt)
    x = jnp.concatenate([img.astype(txt.dtype), txt], axis=1)
    b, n_img = img.shape[0], img.shape[1]
    mask_ar = jnp.concatenate([jnp.zeros((b, n_img), jnp.int32), mask_ar_bt.astype(jnp.int32)], 1)
    input_mask = jnp.concatenate([jnp.ones((b, n_img), bool), input_mask_bt.astype(bool)], 1)
    masks = gemma2.training_masks(cfg.text, mask_ar, input_mask)
    pos = jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), mask_ar.shape)
    x, _ = gemma2.decode_layers(params["llm"], cfg.text, x, pos, masks)
    return gemma2.lm_head(params["llm"], cfg.text, x[:, n_img:])


def _dtype(params: dict) -> jnp.dtype:
    """The activation dtype = the decoder's parameter dtype (f32 or bf16)."""
    return params["llm"]["embedder"]["input_embedding"].dtype
