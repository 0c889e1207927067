"""The parameter tree's keys and shapes, as big_vision names them.

This is the contract between the model, the checkpoint readers/writers and the
exporters: one flat `"img/embedding/kernel" -> shape` table per config. Layers
are stacked on axis 0 exactly as in big_vision's `paligemma2-*.npz`, so the
big_vision reader is a rename-free load. Pure Python: no jax, no numpy.
"""

from __future__ import annotations

import math

from pg2edge.config import ModelConfig

Shape = tuple[int, ...]

_VIT = "img/Transformer/encoderblock"


def param_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    """Every parameter's `/`-joined key and shape for `cfg`."""
    v, t = cfg.vision, cfg.text
    L, D, F, H, hd, P = v.depth, v.width, v.mlp_dim, v.num_heads, v.head_dim, v.patch_size
    shapes: dict[str, Shape] = {
        "img/embedding/kernel": (P, P, 3, D),
        "img/embedding/bias": (D,),
        "img/pos_embedding": (1, v.num_patches, D),
        f"{_VIT}/LayerNorm_0/scale": (L, D),
        f"{_VIT}/LayerNorm_0/bias": (L, D),
        f"{_VIT}/LayerNorm_1/scale": (L, D),
        f"{_VIT}/LayerNorm_1/bias": (L, D),
        f"{_VIT}/MlpBlock_0/Dense_0/kernel": (L, D, F),
        f"{_VIT}/MlpBlock_0/Dense_0/bias": (L, F),
        f"{_VIT}/MlpBlock_0/Dense_1/kernel": (L, F, D),
        f"{_VIT}/MlpBlock_0/Dense_1/bias": (L, D),
    }
    for name in ("query", "key", "value"):
        shapes[f"{_VIT}/MultiHeadDotProductAttention_0/{name}/kernel"] = (L, D, H, hd)
        shapes[f"{_VIT}/MultiHeadDotProductAttention_0/{name}/bias"] = (L, H, hd)
    shapes[f"{_VIT}/MultiHeadDotProductAttention_0/out/kernel"] = (L, H, hd, D)
    shapes[f"{_VIT}/MultiHeadDotProductAttention_0/out/bias"] = (L, D)
    shapes["img/Transformer/encoder_norm/scale"] = (D,)
    shapes["img/Transformer/encoder_norm/bias"] = (D,)
    shapes["img/head/kernel"] = (D, t.width)
    shapes["img/head/bias"] = (t.width,)

    Lt, Dt, Ft, N, K, Ht = t.depth, t.width, t.mlp_dim, t.num_heads, t.num_kv_heads, t.head_dim
    shapes.update({
        "llm/embedder/input_embedding": (t.vocab_size, Dt),
        "llm/layers/attn/q_einsum/w": (Lt, N, Dt, Ht),
        "llm/layers/attn/kv_einsum/w": (Lt, 2, K, Dt, Ht),
        "llm/layers/attn/attn_vec_einsum/w": (Lt, N, Ht, Dt),
        "llm/layers/mlp/gating_einsum": (Lt, 2, Dt, Ft),
        "llm/layers/mlp/linear": (Lt, Ft, Dt),
        "llm/layers/pre_attention_norm/scale": (Lt, Dt),
        "llm/layers/post_attention_norm/scale": (Lt, Dt),
        "llm/layers/pre_ffw_norm/scale": (Lt, Dt),
        "llm/layers/post_ffw_norm/scale": (Lt, Dt),
        "llm/final_norm/scale": (Dt,),
    })
    return shapes


def param_count(cfg: ModelConfig) -> int:
    """Total number of parameters of `cfg`."""
    total = 0
    for shape in param_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def float32_bytes(cfg: ModelConfig) -> int:
    """Size of the model's weights in float32 (what decides how conversions are staged and isolated)."""
    return 4 * sum(math.prod(s) for s in param_shapes(cfg).values())


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dict -> flat `/`-joined dict."""
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "/"))
        else:
            flat[key] = v
    return flat


def unflatten(flat: dict) -> dict:
    """Flat `/`-joined dict -> nested dict (the model's param tree)."""
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree
