"""The `config.json` beside HF weights: written so transformers loads them, read for what shapes can't say."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pg2edge.checkpoint.hf_mapping import padded_vocab
from pg2edge.checkpoint.validate import fail
from pg2edge.config import BOS_ID, EOS_ID, PAD_ID, ModelConfig

CONFIG_NAME = "config.json"
# transformers' Gemma2Config default, used when text_config omits the field (what transformers would run).
HF_DEFAULT_FINAL_SOFTCAP = 30.0


def _number(x: float) -> int | float:
    """Integral floats as ints: transformers' strict Gemma2Config types query_pre_attn_scalar as int."""
    return int(x) if float(x).is_integer() else float(x)


def hf_config_dict(cfg: ModelConfig, dtype: np.dtype) -> dict:
    """A `PaliGemmaForConditionalGeneration` config.json for `cfg` (HF vocab = V + <image>, padded)."""
    v, t = cfg.vision, cfg.text
    vocab = padded_vocab(t.vocab_size)
    torch_dtype = np.dtype(dtype).name
    layer_types = ["sliding_attention" if t.is_local_layer(i) else "full_attention" for i in range(t.depth)]
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "model_type": "paligemma",
        "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID,
        "image_token_index": t.vocab_size,
        "hidden_size": t.width,
        "projection_dim": t.width,
        "vocab_size": vocab,
        "tie_word_embeddings": True,
        "torch_dtype": torch_dtype,
        "text_config": {
            "model_type": "gemma2",
            "architectures": ["Gemma2ForCausalLM"],
            "hidden_size": t.width,
            "intermediate_size": t.mlp_dim,
            "num_hidden_layers": t.depth,
            "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads,
            "head_dim": t.head_dim,
            "query_pre_attn_scalar": _number(t.query_pre_attn_scalar),
            "vocab_size": vocab,
            "attn_logit_softcapping": float(t.attn_logit_softcap) if t.attn_logit_softcap else None,
            "final_logit_softcapping": float(t.final_logit_softcap) if t.final_logit_softcap else None,
            "sliding_window": t.sliding_window,
            "layer_types": layer_types,
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": float(t.norm_eps),
            "rope_theta": float(t.rope_base),
            "max_position_embeddings": 8192,
            "num_image_tokens": cfg.num_image_tokens,
            "torch_dtype": torch_dtype,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": v.mlp_dim,
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.num_heads,
            "patch_size": v.patch_size,
            "image_size": v.image_size,
            "num_image_tokens": cfg.num_image_tokens,
            "projection_dim": t.width,
            "vision_use_head": False,
            "layer_norm_eps": float(v.norm_eps),
            "hidden_act": "gelu_pytorch_tanh",
            "torch_dtype": torch_dtype,
        },
    }


def find_hf_config(weights: str | os.PathLike) -> Path | None:
    """The config.json in a weights directory, or beside a weights file; None if there is none."""
    weights = Path(weights)
    candidate = (weights if weights.is_dir() else weights.parent) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def read_final_softcap(config_path: str | os.PathLike) -> float:
    """`text_config.final_logit_softcapping` as pg2edge's float (None -> 0.0 = off; absent -> HF's default)."""
    try:
        doc = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(config_path, f"expected a readable JSON config, found {type(e).__name__} ({e})") from None
    text = doc.get("text_config") if isinstance(doc, dict) else None
    if not isinstance(text, dict):
        raise fail(config_path, "expected a PaliGemma config with a text_config object", key="text_config")
    value = text.get("final_logit_softcapping", HF_DEFAULT_FINAL_SOFTCAP)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise fail(config_path, f"expected a non-negative number or null, found {value!r}",
                   key="text_config.final_logit_softcapping")
    return float(value)
