"""Autoregressive generation with the JAX model: the reference the exported bundles must match.

Greedy or sampled (numpy `pg2edge.sampling`, shared with the runtime). The
prompt is padded to one static prefill length and decoded on a static cache,
exactly the loop the runtime runs on ONNX / TFLite parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pg2edge.config import EOS_ID, ModelConfig
from pg2edge.model import paligemma
from pg2edge.sampling import SamplingConfig, choose, new_rng


@dataclass(frozen=True)
class Generation:
    """Generated ids per row (without the prompt), the step logits, and why each row stopped."""

    tokens: list[list[int]]
    logits: np.ndarray  # [B, steps, V] f32: the distribution each token was chosen from
    stop_reasons: list[str]  # "eos" | "max_new_tokens" | "cache_full"


@partial(jax.jit, static_argnums=(1, 5))
def _prefill(params, cfg, pixels, tokens, text_len, max_len):
    img = paligemma.encode_image(params, cfg, pixels)
    txt = paligemma.embed(params, cfg, tokens)
    x = jnp.concatenate([img.astype(txt.dtype), txt], axis=1)
    logits, chunk = paligemma.prefill(params, cfg, x, img.shape[1] + text_len)
    cache = paligemma.init_cache(cfg.text, x.shape[0], max_len, txt.dtype)
    return logits, paligemma.write_cache(cache, chunk, jnp.zeros((x.shape[0],), jnp.int32))


@partial(jax.jit, static_argnums=(1,), donate_argnums=(4,))
def _decode(params, cfg, token, pos, cache):
    logits, chunk = paligemma.decode_step(params, cfg, token, pos, cache)
    return logits, paligemma.write_cache(cache, chunk, pos)


def pad_prompts(prompts: Sequence[Sequence[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists to one length; returns ids [B, T] and lengths [B]."""
    lens = np.array([len(p) for p in prompts], np.int32)
    length = int(lens.max()) if length is None else length
    ids = np.zeros((len(prompts), length), np.int32)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = p
    return ids, lens


def generate(params: dict, cfg: ModelConfig, pixels_bhwc: np.ndarray, prompts: Sequence[Sequence[int]],
             max_new_tokens: int = 32, max_len: int = 1024, sampling: SamplingConfig = SamplingConfig(),
             eos_id: int = EOS_ID, on_token: Callable[[int, int], None] | None = None,
             rows_that_count: int | None = None) -> Generation:
    """Generate up to `max_new_tokens` per image+prompt (prompt ids include <bos> ... "\\n").

    `rows_that_count=n` treats rows n.. as shape padding: the loop ends once the
    first n rows are finished (callers pad batches to few compiled shapes).
    """
    ids, lens = pad_prompts(prompts)
    logits, cache = _prefill(params, cfg, jnp.asarray(pixels_bhwc), jnp.asarray(ids),
                             jnp.asarray(lens), max_len)
    pos = cfg.num_image_tokens + lens  # slot of the first generated token
    rng = new_rng(sampling)
    batch = len(prompts)
    out: list[list[int]] = [[] for _ in range(batch)]
    reasons: list[str | None] = [None] * batch
    step_logits = []
    for _ in range(max_new_tokens):
        logits_np = np.asarray(logits, np.float32)
        step_logits.append(logits_np)
        tok = choose(logits_np, sampling, rng)
        for row in range(batch):
            if reasons[row] is None:
                out[row].append(int(tok[row]))
                if on_token is not None:
                    on_token(row, int(tok[row]))
                if tok[row] == eos_id:
                    reasons[row] = "eos"
                elif pos[row] >= max_len:
                    reasons[row] = "cache_full"
        if all(r is not None for r in reasons[:rows_that_count]) or len(step_logits) == max_new_tokens:
            break
        safe_pos = np.minimum(pos, max_len - 1).astype(np.int32)
        logits, cache = _decode(params, cfg, jnp.asarray(tok), jnp.asarray(safe_pos), cache)
        pos = pos + 1
    final = [r or "max_new_tokens" for r in reasons]
    return Generation(tokens=out, logits=np.stack(step_logits, 1), stop_reasons=final)
