"""PaliGemma 2 = SigLIP image tokens + Gemma 2 prefix-LM: the graph-split entry points.

`encode_image`, `embed`, `prefill` and `decode_step` are exactly the parts
the exporters trace (DESIGN §3); `forward` is the training graph. They share
`gemma2.decode_layers`, so there is one model definition. `prefill` and
`decode_step` are compositions of their stages (`*_layers` over a range of
layers, then `*_head`), which a staged export (TFLite at full size) runs
group by group.
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


def prompt_embeddings(params: dict, cfg: ModelConfig, image_embeds_bnd: jax.Array, tokens_bt: jax.Array
                      ) -> jax.Array:
    """The prefill input: image embeddings followed by the prompt's scaled token embeddings [B, N + T, D]."""
    txt = embed(params, cfg, tokens_bt)
    return jnp.concatenate([image_embeds_bnd.astype(txt.dtype), txt], axis=1)


def prefill(params: dict, cfg: ModelConfig, embeds_bpd: jax.Array, valid_len_b: jax.Array
            ) -> tuple[jax.Array, KVChunk]:
    """Run a padded prompt (image + prefix embeddings) from an empty cache.

    Returns the logits [B, V] at each row's last valid position and the keys/values
    [B, K, P, H] of all P positions, to be written at cache slots [0, P) (slots >=
    valid_len are masked out by every later step).
    """
    x, chunk = prefill_layers(params, cfg, embeds_bpd.astype(_dtype(params)), valid_len_b, range(cfg.text.depth))
    return prefill_head(params, cfg, x, valid_len_b), chunk


def prefill_layers(params: dict, cfg: ModelConfig, x_bpd: jax.Array, valid_len_b: jax.Array,
                   layers: range) -> tuple[jax.Array, KVChunk]:
    """Decoder layers `layers` of a prefill; `params` stacks exactly those layers (see `gemma2.decode_layers`)."""
    b, p, _ = x_bpd.shape
    pos_bp = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    masks = gemma2.prefill_masks(valid_len_b, p)
    return gemma2.decode_layers(params["llm"], cfg.text, x_bpd, pos_bp, masks, layers=layers, final_norm=False)


def prefill_head(params: dict, cfg: ModelConfig, x_bpd: jax.Array, valid_len_b: jax.Array) -> jax.Array:
    """Final norm, then the logits [B, V] at each row's last valid position."""
    x = gemma2.apply_final_norm(params["llm"], cfg.text, x_bpd)
    # one-hot pick of the last valid row: a matmul, so exported graphs need no gather
    last_bp = jax.nn.one_hot(valid_len_b - 1, x.shape[1], dtype=x.dtype)
    last = jnp.einsum("bp,bpd->bd", last_bp, x)
    return gemma2.lm_head(params["llm"], cfg.text, last)


def decode_step(params: dict, cfg: ModelConfig, token_b: jax.Array, pos_b: jax.Array,
                cache: KVCache) -> tuple[jax.Array, KVChunk]:
    """One token at position `pos` (its cache slot) -> next-token logits [B, V] and its keys/values."""
    x, chunk = decode_layers(params, cfg, embed(params, cfg, token_b[:, None]), pos_b, cache, range(cfg.text.depth))
    return decode_head(params, cfg, x), chunk


def decode_layers(params: dict, cfg: ModelConfig, x_b1d: jax.Array, pos_b: jax.Array, cache: KVCache,
                  layers: range) -> tuple[jax.Array, KVChunk]:
    """Decoder layers `layers` of one decode step; `params` and `cache` hold exactly those layers."""
    masks = gemma2.decode_masks(cfg.text, pos_b, cache.capacity)
    return gemma2.decode_layers(params["llm"], cfg.text, x_b1d, pos_b[:, None], masks, cache, layers=layers,
                                final_norm=False)


def decode_head(params: dict, cfg: ModelConfig, x_b1d: jax.Array) -> jax.Array:
    """Final norm and next-token logits [B, V] of a decode step."""
    x = gemma2.apply_final_norm(params["llm"], cfg.text, x_b1d)
    return gemma2.lm_head(params["llm"], cfg.text, x[:, 0])


def step(params: dict, cfg: ModelConfig, image_embeds_bmd: jax.Array, tokens_bt: jax.Array, start_b: jax.Array,
         cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Prefill or decode as one function of the chunk length: image embeddings (M of them, 0 when decoding)
    and T tokens at cache slots [start, start + M + T), all real (no padding).

    Returns the logits [B, V] at the chunk's last position and the cache with the chunk's keys/values
    written in. A graph traced with M and T symbolic serves both the prompt (M = image tokens, start 0) and
    every decode step (M = 0, T = 1), so a runtime holds one copy of the decoder weights; each layer's
    attention is one `gemma2.cached_attention` call, which writes the cache in place and reads only the
    slots filled so far (ONNX `GroupQueryAttention`).
    """
    x = prompt_embeddings(params, cfg, image_embeds_bmd, tokens_bt)
    b, n, _ = x.shape
    pos_bn = start_b[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :]
    x, cache = gemma2.decode_layers(params["llm"], cfg.text, x.astype(_dtype(params)), pos_bn, None, cache,
                                    final_norm=False, write_at=start_b)
    return prefill_head(params, cfg, x, jnp.full((b,), n, jnp.int32)), cache


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
    x, _ = gemma2.decode_layers(params["llm"], cfg.text, x, pos, masks, outputs_from=n_img)
    return gemma2.lm_head(params["llm"], cfg.text, x)


def _dtype(params: dict) -> jnp.dtype:
    """The activation dtype = the decoder's parameter dtype (f32 or bf16)."""
    return params["llm"]["embedder"]["input_embedding"].dtype
