"""The JAX PaliGemma 2 model: the single source of truth for export, runtime parity and training."""

from pg2edge.model.gemma2 import KVCache, KVChunk, init_cache, write_cache
from pg2edge.model.generate import Generation, generate, pad_prompts
from pg2edge.model.init import init_params
from pg2edge.model.paligemma import decode_step, embed, encode_image, forward, prefill

__all__ = ["KVCache", "KVChunk", "init_cache", "write_cache", "Generation", "generate", "pad_prompts", "init_params",
           "decode_step", "embed", "encode_image", "forward", "prefill"]
