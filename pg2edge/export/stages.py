"""Staged TFLite layout: every part runs as a chain of files, each small enough to convert in bounded memory.

Converting a file peaks near 12x its float32 weights (the converter's copies,
then quantization), so a 3B decoder cannot be converted as one graph in 8 GB. Here
each part of the graph split (`split.py`) is cut along the model's own stage
functions (`paligemma.prefill_layers` / `prefill_head`, `decode_layers` /
`decode_head`, `siglip.embed_patches` / `encoder_blocks` / `project`) into:

* `vision_<g>.tflite`: a group of SigLIP blocks (the first also embeds the
  patches, the last also projects); signature `vision`;
* `layers_<g>.tflite`: a group of decoder layers, with one signature per
  prefill bucket (`prefill_<n>`) and `decode`, sharing their weights (the
  converter stores a constant used by several signatures once);
* `table.tflite`: the tied embedding table with the final norm:
  `embed_prefill_<n>` / `embed_decode` (lookup, scale, image + text concat)
  and `head_prefill_<n>` / `head_decode` (final norm, LM head, soft-cap), one
  table for both, as in the model.

Groups are sized so that no file holds more than `stage_bytes` of float32
weights; a small model is one group per tower. A part's pipeline is its list
of (file, signature) stages: each stage reads its inputs by name from the
part's inputs and the earlier stages' outputs (hidden states travel as
`vision_hidden` / `hidden`), and the part's outputs are picked by name at the
end, so the runtime drives a staged part exactly like a single graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.export.split import Part, SplitConfig, TensorSpec, kv_specs
from pg2edge.model import paligemma, siglip
from pg2edge.model.gemma2 import KVCache
from pg2edge.param_layout import flatten, param_shapes, unflatten

STAGE_BYTES = 400 << 20  # float32 weight bytes per file: a file's conversion peaks near 12x this (5 GB)
HIDDEN, VISION_HIDDEN = "hidden", "vision_hidden"
_DECODER_STACK, _VISION_STACK = "llm/layers/", "img/Transformer/encoderblock/"


@dataclass(frozen=True)
class StageFile:
    """One `.tflite` file: its signatures (one `Part` each, `Part.name` the key) and the weights they share."""

    name: str
    parts: tuple[Part, ...]
    keys: tuple[str, ...]  # flat param names the file holds
    layers: range | None = None  # for stacked params: the slice of the stack it holds
    widen: bool = False  # the tied table, too big to convert: convert at a stand-in vocabulary, then widen

    def params(self, params: dict) -> dict:
        """This file's weights from the full (possibly lazy) tree, materialized: stacks sliced to `layers`."""
        flat = flatten(params)
        return unflatten({k: _read(flat[k], self.layers if _stacked(k) else None) for k in self.keys})


@dataclass(frozen=True)
class StagePlan:
    """The files of a staged export and, per part of the split, its chain of (file, signature)."""

    files: tuple[StageFile, ...]
    pipelines: dict[str, tuple[tuple[str, str], ...]]


def _stacked(key: str) -> bool:
    return key.startswith((_DECODER_STACK, _VISION_STACK))


def _read(value, layers: range | None) -> np.ndarray:
    """A leaf as numpy; of a stack, only `layers` (read layer by layer from a lazy stack)."""
    from pg2edge.checkpoint.lazy import LazyStack

    if layers is None:
        return np.asarray(value)
    if isinstance(value, LazyStack):
        return np.stack([np.asarray(value.layer(i).materialize()) for i in layers])
    return np.asarray(value[layers.start:layers.stop])


def _groups(count: int, bytes_each: int, budget: int) -> list[range]:
    """Consecutive ranges over `count` layers, each within `budget` bytes (at least one layer)."""
    size = max(1, budget // max(bytes_each, 1))
    return [range(a, min(a + size, count)) for a in range(0, count, size)]


def _stack_bytes(cfg: ModelConfig, prefix: str) -> tuple[list[str], int]:
    """(param names under a stacked prefix, float32 bytes of one layer of them)."""
    shapes = {k: s for k, s in param_shapes(cfg).items() if k.startswith(prefix)}
    return sorted(shapes), sum(4 * math.prod(s[1:]) for s in shapes.values())


def _vision_files(cfg: ModelConfig, split: SplitConfig, budget: int) -> list[StageFile]:
    vc, b, r = cfg.vision, split.batch, cfg.resolution
    keys, per_block = _stack_bytes(cfg, _VISION_STACK)
    groups = _groups(vc.depth, per_block, budget)
    hidden = TensorSpec(VISION_HIDDEN, (b, cfg.num_image_tokens, vc.width), "float32")
    files = []
    for g, blocks in enumerate(groups):
        first, last = g == 0, g == len(groups) - 1

        def fn(params, x, first=first, last=last, count=len(blocks)):
            img = params["img"]
            if first:
                x = siglip.embed_patches(img, vc, x)
            x = siglip.encoder_blocks(img, vc, x, count)
            return ((siglip.project(img, vc, x) if last else x).astype(jnp.float32),)

        inputs = (TensorSpec("pixels", (b, r, r, 3), "float32"),) if first else (hidden,)
        outputs = (TensorSpec("image_embeds", (b, cfg.num_image_tokens, cfg.text.width), "float32"),) if last \
            else (hidden,)
        extra = (["img/embedding/kernel", "img/embedding/bias", "img/pos_embedding"] if first else []) + \
            (["img/Transformer/encoder_norm/scale", "img/Transformer/encoder_norm/bias",
              "img/head/kernel", "img/head/bias"] if last else [])
        files.append(StageFile(f"vision_{g}", (Part("vision", fn, inputs, outputs),), tuple(keys + extra), blocks))
    return files


def _layer_file(cfg: ModelConfig, split: SplitConfig, g: int, layers: range, keys: list[str]) -> StageFile:
    t, b = cfg.text, split.batch
    new_kv = [f"new_{kind}_{i}" for kind in ("k", "v") for i in layers]
    parts = []
    for n in split.prefill_lens:
        total = cfg.num_image_tokens + n

        def prefill(params, x, valid_len):
            x, chunk = paligemma.prefill_layers(params, cfg, x, valid_len, layers)
            return (x, *(a.astype(jnp.float32) for a in chunk.k + chunk.v))

        kv = kv_specs(cfg, "new_", b, total)
        parts.append(Part(f"prefill_{n}", prefill,
                          (TensorSpec(HIDDEN, (b, total, t.width), "float32"), TensorSpec("valid_len", (b,), "int32")),
                          (TensorSpec(HIDDEN, (b, total, t.width), "float32"),
                           *(s for s in kv if s.name in new_kv))))

    def decode(params, x, pos, *kv):
        cache = KVCache(k=tuple(kv[:len(layers)]), v=tuple(kv[len(layers):]))
        x, chunk = paligemma.decode_layers(params, cfg, x, pos, cache, layers)
        return (x, *(a.astype(jnp.float32) for a in chunk.k + chunk.v))

    cache = [s for s in kv_specs(cfg, "", b, split.max_len) if f"new_{s.name}" in new_kv]
    step = [s for s in kv_specs(cfg, "new_", b, 1) if s.name in new_kv]
    hidden = TensorSpec(HIDDEN, (b, 1, t.width), "float32")
    parts.append(Part("decode", decode, (hidden, TensorSpec("pos", (b,), "int32"), *cache), (hidden, *step)))
    return StageFile(f"layers_{g}", tuple(parts), tuple(keys), layers)


def _table_file(cfg: ModelConfig, split: SplitConfig, budget: int) -> StageFile:
    t, b, n_img = cfg.text, split.batch, cfg.num_image_tokens
    logits = TensorSpec("logits", (b, t.vocab_size), "float32")
    parts = []
    for n in split.prefill_lens:
        hidden = TensorSpec(HIDDEN, (b, n_img + n, t.width), "float32")

        def embed(params, image_embeds, tokens):
            return (paligemma.prompt_embeddings(params, cfg, image_embeds, tokens),)

        def head(params, x, valid_len):
            return (paligemma.prefill_head(params, cfg, x, valid_len),)

        parts.append(Part(f"embed_prefill_{n}", embed, (TensorSpec("image_embeds", (b, n_img, t.width), "float32"),
                                                         TensorSpec("tokens", (b, n), "int32")), (hidden,)))
        parts.append(Part(f"head_prefill_{n}", head, (hidden, TensorSpec("valid_len", (b,), "int32")), (logits,)))
    hidden = TensorSpec(HIDDEN, (b, 1, t.width), "float32")
    parts.append(Part("embed_decode", lambda params, token: (paligemma.embed(params, cfg, token[:, None]),),
                      (TensorSpec("token", (b,), "int32"),), (hidden,)))
    parts.append(Part("head_decode", lambda params, x: (paligemma.decode_head(params, cfg, x),), (hidden,), (logits,)))
    return StageFile("table", tuple(parts), ("llm/embedder/input_embedding", "llm/final_norm/scale"),
                     widen=table_bytes(cfg) > budget)


def table_bytes(cfg: ModelConfig) -> int:
    """float32 bytes of the tied embedding table (above the stage budget it is widened, not converted)."""
    return 4 * cfg.text.vocab_size * cfg.text.width


def plan_stages(cfg: ModelConfig, split: SplitConfig, stage_bytes: int = STAGE_BYTES) -> StagePlan:
    """The staged files for `cfg` and each split part's pipeline through them."""
    split.validate(cfg)
    vision = _vision_files(cfg, split, stage_bytes)
    keys, per_layer = _stack_bytes(cfg, _DECODER_STACK)
    layer_files = [_layer_file(cfg, split, g, layers, keys)
                   for g, layers in enumerate(_groups(cfg.text.depth, per_layer, stage_bytes))]
    files = (*vision, *layer_files, _table_file(cfg, split, stage_bytes))
    pipelines = {"vision": tuple((f.name, "vision") for f in vision)}
    for n in split.prefill_lens:
        pipelines[f"prefill_{n}"] = (("table", f"embed_prefill_{n}"), *((f.name, f"prefill_{n}") for f in layer_files),
                                     ("table", f"head_prefill_{n}"))
    pipelines["decode"] = (("table", "embed_decode"), *((f.name, "decode") for f in layer_files),
                           ("table", "head_decode"))
    return StagePlan(files, pipelines)

