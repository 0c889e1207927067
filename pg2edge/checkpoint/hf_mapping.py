"""Hugging Face PaliGemma tensor names <-> the big_vision param tree, as one table used both ways.

Each `Rule` ties one HF tensor to one slice of one big_vision array (a whole
array, layer `i`, or `[i, j]` for the fused k/v and gate/up arrays) with the
transform in each direction, following transformers'
`convert_paligemma2_weights_to_hf.py`. Names are handled in a short canonical
form (`vision_tower.embeddings…`, `language_model.layers.0…`); every spelling
the hub or transformers has used reduces to it, and writers emit the hub's
legacy spelling (`vision_tower.vision_model.…`, `language_model.model.…`),
which every transformers version loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.param_layout import param_shapes

Shape = tuple[int, ...]
Transform = Callable[[np.ndarray], np.ndarray]

EMBED_ROW_MULTIPLE = 64  # HF adds <image> = V, then pads the table to a multiple of 64 rows
TIED_HEADS = frozenset({"lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight"})
_PREFIX_ALIASES = (("model.vision_tower.", "vision_tower."), ("model.language_model.", "language_model."),
                   ("model.multi_modal_projector.", "multi_modal_projector."))
_SUBMODULE_ALIASES = (("vision_tower.vision_model.", "vision_tower."), ("language_model.model.", "language_model."))
_VIT = "img/Transformer/encoderblock"


@dataclass(frozen=True)
class Rule:
    """One HF tensor = `to_hf(bv[index])`; `bv[index] = from_hf(hf tensor)`."""

    hf: str  # canonical HF name
    bv: str  # big_vision key
    index: tuple[int, ...]  # () whole array, (i,) layer i, (i, j) layer i, part j
    hf_shape: Shape  # shape written; readers accept any row count >= min_rows when min_rows is set
    to_hf: Transform
    from_hf: Transform
    min_rows: int | None = None

    def accepts(self, shape: Shape) -> bool:
        """Whether a stored HF tensor of `shape` can fill this slot."""
        if self.min_rows is None:
            return tuple(shape) == self.hf_shape
        return len(shape) == len(self.hf_shape) and shape[1:] == self.hf_shape[1:] and shape[0] >= self.min_rows


def canonical_name(name: str) -> str | None:
    """Any accepted HF spelling -> the short canonical name; None for the tied LM head (ignored)."""
    if name in TIED_HEADS:
        return None
    for aliases in (_PREFIX_ALIASES, _SUBMODULE_ALIASES):
        for old, new in aliases:
            if name.startswith(old):
                name = new + name[len(old):]
                break
    return name


def hub_name(canonical: str) -> str:
    """Canonical name -> the hub's legacy spelling that writers emit."""
    for long, short in _SUBMODULE_ALIASES:
        if canonical.startswith(short):
            return long + canonical[len(short):]
    return canonical


def padded_vocab(vocab_size: int) -> int:
    """Rows of HF's embedding table: V tokens + <image>, rounded up to a multiple of 64."""
    return -(-(vocab_size + 1) // EMBED_ROW_MULTIPLE) * EMBED_ROW_MULTIPLE


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _t(a: np.ndarray) -> np.ndarray:
    return a.T


def _vision_rules(cfg: ModelConfig) -> list[Rule]:
    v = cfg.vision
    D, F, H, hd, P, Np = v.width, v.mlp_dim, v.num_heads, v.head_dim, v.patch_size, v.num_patches
    rules = [
        Rule("vision_tower.embeddings.patch_embedding.weight", "img/embedding/kernel", (), (D, 3, P, P),
             lambda a: a.transpose(3, 2, 0, 1), lambda h: h.transpose(2, 3, 1, 0)),
        Rule("vision_tower.embeddings.patch_embedding.bias", "img/embedding/bias", (), (D,), _identity, _identity),
        Rule("vision_tower.embeddings.position_embedding.weight", "img/pos_embedding", (), (Np, D),
             lambda a: a[0], lambda h: h[None]),
    ]
    per_layer: list[tuple[str, str, Shape, Transform, Transform]] = [
        ("layer_norm1.weight", "LayerNorm_0/scale", (D,), _identity, _identity),
        ("layer_norm1.bias", "LayerNorm_0/bias", (D,), _identity, _identity),
        ("layer_norm2.weight", "LayerNorm_1/scale", (D,), _identity, _identity),
        ("layer_norm2.bias", "LayerNorm_1/bias", (D,), _identity, _identity),
        ("mlp.fc1.weight", "MlpBlock_0/Dense_0/kernel", (F, D), _t, _t),
        ("mlp.fc1.bias", "MlpBlock_0/Dense_0/bias", (F,), _identity, _identity),
        ("mlp.fc2.weight", "MlpBlock_0/Dense_1/kernel", (D, F), _t, _t),
        ("mlp.fc2.bias", "MlpBlock_0/Dense_1/bias", (D,), _identity, _identity),
    ]
    for hf, bv in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        per_layer += [
            (f"self_attn.{hf}.weight", f"MultiHeadDotProductAttention_0/{bv}/kernel", (H * hd, D),
             lambda a: a.reshape(D, H * hd).T, lambda h: h.T.reshape(D, H, hd)),
            (f"self_attn.{hf}.bias", f"MultiHeadDotProductAttention_0/{bv}/bias", (H * hd,),
             lambda a: a.reshape(H * hd), lambda h: h.reshape(H, hd)),
        ]
    per_layer += [
        ("self_attn.out_proj.weight", "MultiHeadDotProductAttention_0/out/kernel", (D, H * hd),
         lambda a: a.reshape(H * hd, D).T, lambda h: h.T.reshape(H, hd, D)),
        ("self_attn.out_proj.bias", "MultiHeadDotProductAttention_0/out/bias", (D,), _identity, _identity),
    ]
    for hf, bv, shape, to_hf, from_hf in per_layer:
        rules += [Rule(f"vision_tower.encoder.layers.{i}.{hf}", f"{_VIT}/{bv}", (i,), shape, to_hf, from_hf)
                  for i in range(v.depth)]
    rules += [
        Rule("vision_tower.post_layernorm.weight", "img/Transformer/encoder_norm/scale", (), (D,),
             _identity, _identity),
        Rule("vision_tower.post_layernorm.bias", "img/Transformer/encoder_norm/bias", (), (D,),
             _identity, _identity),
        Rule("multi_modal_projector.linear.weight", "img/head/kernel", (), (cfg.text.width, D), _t, _t),
        Rule("multi_modal_projector.linear.bias", "img/head/bias", (), (cfg.text.width,), _identity, _identity),
    ]
    return rules


def _text_rules(cfg: ModelConfig) -> list[Rule]:
    t = cfg.text
    V, Dt, F, N, K, Ht = t.vocab_size, t.width, t.mlp_dim, t.num_heads, t.num_kv_heads, t.head_dim
    rows = padded_vocab(V)

    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.zeros((rows - V, Dt), a.dtype)])

    def heads_in(n: int) -> tuple[Transform, Transform]:  # [n, Dt, Ht] <-> [n*Ht, Dt]
        return (lambda a: a.transpose(0, 2, 1).reshape(n * Ht, Dt),
                lambda h: h.reshape(n, Ht, Dt).transpose(0, 2, 1))

    rules = [Rule("language_model.embed_tokens.weight", "llm/embedder/input_embedding", (), (rows, Dt),
                  pad, lambda h: h[:V], min_rows=V)]
    per_layer: list[tuple[str, str, tuple[int, ...], Shape, Transform, Transform]] = [
        ("self_attn.q_proj.weight", "attn/q_einsum/w", (), (N * Ht, Dt), *heads_in(N)),
        ("self_attn.k_proj.weight", "attn/kv_einsum/w", (0,), (K * Ht, Dt), *heads_in(K)),
        ("self_attn.v_proj.weight", "attn/kv_einsum/w", (1,), (K * Ht, Dt), *heads_in(K)),
        ("self_attn.o_proj.weight", "attn/attn_vec_einsum/w", (), (Dt, N * Ht),
         lambda a: a.transpose(2, 0, 1).reshape(Dt, N * Ht), lambda h: h.reshape(Dt, N, Ht).transpose(1, 2, 0)),
        ("mlp.gate_proj.weight", "mlp/gating_einsum", (0,), (F, Dt), _t, _t),
        ("mlp.up_proj.weight", "mlp/gating_einsum", (1,), (F, Dt), _t, _t),
        ("mlp.down_proj.weight", "mlp/linear", (), (Dt, F), _t, _t),
        ("input_layernorm.weight", "pre_attention_norm/scale", (), (Dt,), _identity, _identity),
        ("post_attention_layernorm.weight", "post_attention_norm/scale", (), (Dt,), _identity, _identity),
        ("pre_feedforward_layernorm.weight", "pre_ffw_norm/scale", (), (Dt,), _identity, _identity),
        ("post_feedforward_layernorm.weight", "post_ffw_norm/scale", (), (Dt,), _identity, _identity),
    ]
    for hf, bv, part, shape, to_hf, from_hf in per_layer:
        rules += [Rule(f"language_model.layers.{i}.{hf}", f"llm/layers/{bv}", (i, *part), shape, to_hf, from_hf)
                  for i in range(t.depth)]
    rules.append(Rule("language_model.norm.weight", "llm/final_norm/scale", (), (Dt,), _identity, _identity))
    return rules


def hf_rules(cfg: ModelConfig) -> dict[str, list[Rule]]:
    """big_vision key -> the rules that fill it, keys in `param_shapes` order, layers ascending."""
    by_bv: dict[str, list[Rule]] = {key: [] for key in param_shapes(cfg)}
    for rule in _vision_rules(cfg) + _text_rules(cfg):
        by_bv[rule.bv].append(rule)
    for key in by_bv:
        by_bv[key].sort(key=lambda r: r.index)
    return by_bv
