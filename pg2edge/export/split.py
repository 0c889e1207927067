"""The graph split (DESIGN §3): static-shape parts built from `pg2edge.model`'s own functions.

Each `Part` is a pure function `fn(params, *inputs) -> tuple(outputs)` plus
the names, shapes and dtypes of its inputs and outputs. Exporters (ONNX,
TFLite) trace `fn` with the weights bound; the runtime feeds the same names.
No layer is re-implemented here.

KV layout (stated in the manifest): per layer `k_i`/`v_i` of shape
[B, num_kv_heads, max_len, head_dim]. Graphs never copy the cache: `prefill`
returns `new_k_i`/`new_v_i` [B, K, P, H] for slots [0, P) and `decode` reads
`k_i`/`v_i` and returns `new_k_i`/`new_v_i` [B, K, 1, H] for slot `pos`;
the runtime writes those into its cache buffers in place. The ONNX `step`
instead returns `present_k_i`/`present_v_i` [B, K, max_len, H], which the
runtime binds to the `k_i`/`v_i` buffers themselves (onnxruntime's
`GroupQueryAttention` writes the new slots into that shared buffer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp
import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.model import paligemma
from pg2edge.model.gemma2 import KVCache


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output."""

    name: str
    shape: tuple[int | str, ...]  # a name ("t", "m + t") is an axis whose length is chosen per call
    dtype: str  # numpy dtype name: "float32", "int32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype)


@dataclass(frozen=True)
class Part:
    """One exported graph: a pure function of (params, *inputs) and its signature."""

    name: str
    fn: Callable
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class SplitConfig:
    """Static shapes fixed at export time."""

    max_len: int = 1024
    prefill_lens: tuple[int, ...] = (512,)  # text positions after the image tokens, per bucket
    batch: int = 1

    def validate(self, cfg: ModelConfig) -> None:
        """Refuse shapes the cache cannot hold."""
        from pg2edge.config import ConfigError

        for p in self.prefill_lens:
            total = cfg.num_image_tokens + p
            if p < 1 or total >= self.max_len:
                raise ConfigError(f"prefill bucket {p}: image tokens ({cfg.num_image_tokens}) + {p} = {total} "
                                  f"must be < --max-len {self.max_len}")


def kv_specs(cfg: ModelConfig, prefix: str, batch: int, length: int | str) -> tuple[TensorSpec, ...]:
    """`<prefix>k_i` then `<prefix>v_i` for every layer i: [batch, num_kv_heads, length, head_dim]."""
    t = cfg.text
    shape = (batch, t.num_kv_heads, length, t.head_dim)
    return tuple(TensorSpec(f"{prefix}{kind}_{i}", shape, "float32")
                 for kind in ("k", "v") for i in range(t.depth))


def vision_part(cfg: ModelConfig, split: SplitConfig) -> Part:
    """pixels [B,R,R,3] in [-1,1] (NHWC) -> projected image embeddings [B,N,D]."""
    r, b = cfg.resolution, split.batch

    def fn(params, pixels):
        return (paligemma.encode_image(params, cfg, pixels).astype(jnp.float32),)

    return Part("vision", fn, (TensorSpec("pixels", (b, r, r, 3), "float32"),),
                (TensorSpec("image_embeds", (b, cfg.num_image_tokens, cfg.text.width), "float32"),))


def prefill_part(cfg: ModelConfig, split: SplitConfig, text_len: int) -> Part:
    """Image embeds + prompt ids (padded to `text_len`) -> last logits and the prompt's keys/values."""
    b, n_img, total = split.batch, cfg.num_image_tokens, cfg.num_image_tokens + text_len

    def fn(params, image_embeds, tokens, valid_len):
        x = paligemma.prompt_embeddings(params, cfg, image_embeds, tokens)
        logits, chunk = paligemma.prefill(params, cfg, x, valid_len)
        return (logits, *(a.astype(jnp.float32) for a in chunk.k + chunk.v))

    inputs = (TensorSpec("image_embeds", (b, n_img, cfg.text.width), "float32"),
              TensorSpec("tokens", (b, text_len), "int32"),
              TensorSpec("valid_len", (b,), "int32"))
    outputs = (TensorSpec("logits", (b, cfg.text.vocab_size), "float32"),
               *kv_specs(cfg, "new_", b, total))
    return Part(f"prefill_{text_len}", fn, inputs, outputs)


def decode_part(cfg: ModelConfig, split: SplitConfig) -> Part:
    """One token at cache slot `pos` + the cache -> next logits and this token's keys/values."""
    b, depth = split.batch, cfg.text.depth

    def fn(params, token, pos, *kv):
        cache = KVCache(k=tuple(kv[:depth]), v=tuple(kv[depth:]))
        logits, chunk = paligemma.decode_step(params, cfg, token, pos, cache)
        return (logits, *(a.astype(jnp.float32) for a in chunk.k + chunk.v))

    inputs = (TensorSpec("token", (b,), "int32"), TensorSpec("pos", (b,), "int32"),
              *kv_specs(cfg, "", b, split.max_len))
    outputs = (TensorSpec("logits", (b, cfg.text.vocab_size), "float32"), *kv_specs(cfg, "new_", b, 1))
    return Part("decode", fn, inputs, outputs)


def step_part(cfg: ModelConfig, split: SplitConfig) -> Part:
    """Prefill and decode in one graph of symbolic chunk length (`paligemma.step`): M image embeddings (M = 0
    when decoding) and T tokens at cache slots [pos, pos + M + T) -> logits at the last position and the
    cache with the chunk written in. One session of it holds the decoder weights once (ONNX bundles). Each
    `present_k_i` is meant to be bound to the same buffer as `k_i`: the graph then writes only the chunk's
    slots and its attention reads only the slots filled so far."""
    b, depth = split.batch, cfg.text.depth

    def fn(params, image_embeds, tokens, pos, *kv):
        cache = KVCache(k=tuple(kv[:depth]), v=tuple(kv[depth:]))
        logits, cache = paligemma.step(params, cfg, image_embeds, tokens, pos, cache)
        return (logits, *(a.astype(jnp.float32) for a in cache.k + cache.v))

    inputs = (TensorSpec("image_embeds", (b, "m", cfg.text.width), "float32"),
              TensorSpec("tokens", (b, "t"), "int32"), TensorSpec("pos", (b,), "int32"),
              *kv_specs(cfg, "", b, split.max_len))
    outputs = (TensorSpec("logits", (b, cfg.text.vocab_size), "float32"),
               *kv_specs(cfg, "present_", b, split.max_len))
    return Part("step", fn, inputs, outputs)


def split_model(cfg: ModelConfig, split: SplitConfig) -> list[Part]:
    """All parts of a bundle: vision, one prefill per bucket, decode."""
    split.validate(cfg)
    parts = [vision_part(cfg, split)]
    parts += [prefill_part(cfg, split, p) for p in split.prefill_lens]
    parts.append(decode_part(cfg, split))
    return parts
