"""SigLIP So400m/14 image encoder (no pooling head) plus PaliGemma's projector.

Params follow big_vision's `img/...` tree with layers stacked on axis 0. The
patch embedding is written as a reshape + matmul (identical to the stride-14
convolution) so exported graphs need no convolution op.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pg2edge.config import VisionConfig
from pg2edge.model.layers import flat_rows, gelu_tanh, layer_norm, softmax


def patchify(pixels_bhwc: jax.Array, patch: int) -> jax.Array:
    """[B,R,R,3] -> [B, (R/p)^2, p*p*3], rows in raster order, (ph, pw, c) inside."""
    b, h, w, c = pixels_bhwc.shape
    gh, gw = h // patch, w // patch
    x = pixels_bhwc.reshape(b, gh, patch, gw, patch, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * gw, patch * patch * c)


def _block(p: dict, cfg: VisionConfig, x_bnd: jax.Array) -> jax.Array:
    """One pre-norm ViT encoder block."""
    attn = p["MultiHeadDotProductAttention_0"]
    y = layer_norm(x_bnd, p["LayerNorm_0"]["scale"], p["LayerNorm_0"]["bias"], cfg.norm_eps)
    q, k, v = (jnp.einsum("bnd,dhk->bnhk", y, attn[name]["kernel"]) for name in ("query", "key", "value"))
    q, k, v = q + attn["query"]["bias"], k + attn["key"]["bias"], v + attn["value"]["bias"]
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32) * (cfg.head_dim ** -0.5)
    probs = softmax(logits).astype(v.dtype)
    o = jnp.einsum("bhqs,bshk->bqhk", probs, v)
    y = jnp.einsum("bqhk,hkd->bqd", o, attn["out"]["kernel"]) + attn["out"]["bias"]
    x_bnd = x_bnd + y

    mlp = p["MlpBlock_0"]
    y = layer_norm(x_bnd, p["LayerNorm_1"]["scale"], p["LayerNorm_1"]["bias"], cfg.norm_eps)
    y = gelu_tanh(flat_rows(y) @ mlp["Dense_0"]["kernel"] + mlp["Dense_0"]["bias"])
    y = y @ mlp["Dense_1"]["kernel"] + mlp["Dense_1"]["bias"]
    return x_bnd + y.reshape(x_bnd.shape)


def _layer(stacked: dict, i: int) -> dict:
    """Slice layer `i` out of a tree of arrays stacked on axis 0."""
    return jax.tree.map(lambda a: a[i], stacked)


def embed_patches(img: dict, cfg: VisionConfig, pixels_bhwc: jax.Array) -> jax.Array:
    """Pixels in [-1, 1] -> patch embeddings plus positions [B, N_img, width]."""
    dtype = img["embedding"]["kernel"].dtype
    kernel = img["embedding"]["kernel"]
    x = patchify(pixels_bhwc.astype(dtype), cfg.patch_size)
    x = x @ kernel.reshape(-1, kernel.shape[-1]) + img["embedding"]["bias"]
    return x + img["pos_embedding"]


def encoder_blocks(img: dict, cfg: VisionConfig, x_bnd: jax.Array, count: int | None = None) -> jax.Array:
    """The first `count` (default: all) blocks stacked in `img` (a staged export passes a slice of the stack)."""
    stacked = img["Transformer"]["encoderblock"]
    for j in range(cfg.depth if count is None else count):
        x_bnd = _block(_layer(stacked, j), cfg, x_bnd)
    return x_bnd


def project(img: dict, cfg: VisionConfig, x_bnd: jax.Array) -> jax.Array:
    """The final LayerNorm and PaliGemma's linear projector to the text width."""
    norm = img["Transformer"]["encoder_norm"]
    x_bnd = layer_norm(x_bnd, norm["scale"], norm["bias"], cfg.norm_eps)
    return x_bnd @ img["head"]["kernel"] + img["head"]["bias"]


def encode(img: dict, cfg: VisionConfig, pixels_bhwc: jax.Array) -> jax.Array:
    """Pixels in [-1, 1] -> projected image embeddings [B, N_img, D_text]."""
    return project(img, cfg, encoder_blocks(img, cfg, embed_patches(img, cfg, pixels_bhwc)))
