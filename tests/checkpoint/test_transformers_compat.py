"""transformers 5.x loads what write_hf writes (no missing/unexpected keys) and its tensors equal the mapping."""

from __future__ import annotations

import io
import json
import logging

import ml_dtypes
import numpy as np
import pytest
import torch
from ckpt_helpers import assert_trees_equal, cast
from safetensors.torch import load_file, save_file
from transformers import PaliGemmaForConditionalGeneration
from transformers.utils import logging as hf_logging

from pg2edge.checkpoint import detect_variant, load_checkpoint, write_hf

VIT = "img/Transformer/encoderblock"


def _load(path):
    """from_pretrained, returning (model, loading info, everything transformers logged)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = hf_logging.get_logger()
    root.addHandler(handler)
    try:
        model, info = PaliGemmaForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    finally:
        root.removeHandler(handler)
    return model, info, stream.getvalue()


@pytest.fixture(scope="module")
def hf_f32(written):
    return _load(written["safetensors", "float32"])


@pytest.mark.parametrize("fmt", ["safetensors", "safetensors-sharded"])
@pytest.mark.parametrize("dtype_name,torch_dtype", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_transformers_loads_without_missing_or_unexpected_keys(written, fmt, dtype_name, torch_dtype):
    model, info, log = _load(written[fmt, dtype_name])
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    assert "missing" not in log.lower() and "unexpected" not in log.lower() and "not initialized" not in log
    assert model.dtype == torch_dtype
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["model.language_model.embed_tokens.weight"].data_ptr()


def test_transformers_tensors_equal_the_documented_mapping(hf_f32, cfg, params):
    """Each formula written out independently of pg2edge.checkpoint.hf_mapping."""
    sd = {k: v.numpy() for k, v in hf_f32[0].state_dict().items()}
    v, t = cfg.vision, cfg.text
    D, H, hd, Dt, N, K, Ht, V = v.width, v.num_heads, v.head_dim, t.width, t.num_heads, t.num_kv_heads, t.head_dim, \
        t.vocab_size
    vt, lm = "model.vision_tower.", "model.language_model."
    eq = np.testing.assert_array_equal
    eq(sd[vt + "embeddings.patch_embedding.weight"], params["img/embedding/kernel"].transpose(3, 2, 0, 1))
    eq(sd[vt + "embeddings.position_embedding.weight"], params["img/pos_embedding"][0])
    eq(sd[vt + "post_layernorm.weight"], params["img/Transformer/encoder_norm/scale"])
    eq(sd["model.multi_modal_projector.linear.weight"], params["img/head/kernel"].T)
    eq(sd["model.multi_modal_projector.linear.bias"], params["img/head/bias"])
    for i in range(v.depth):
        layer = f"{vt}encoder.layers.{i}."
        for hf, bv in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            attn = f"{VIT}/MultiHeadDotProductAttention_0/{bv}"
            eq(sd[f"{layer}self_attn.{hf}.weight"], params[f"{attn}/kernel"][i].reshape(D, H * hd).T)
            eq(sd[f"{layer}self_attn.{hf}.bias"], params[f"{attn}/bias"][i].reshape(H * hd))
        out = f"{VIT}/MultiHeadDotProductAttention_0/out"
        eq(sd[f"{layer}self_attn.out_proj.weight"], params[f"{out}/kernel"][i].reshape(H * hd, D).T)
        eq(sd[f"{layer}self_attn.out_proj.bias"], params[f"{out}/bias"][i])
        eq(sd[f"{layer}mlp.fc1.weight"], params[f"{VIT}/MlpBlock_0/Dense_0/kernel"][i].T)
        eq(sd[f"{layer}mlp.fc2.bias"], params[f"{VIT}/MlpBlock_0/Dense_1/bias"][i])
        eq(sd[f"{layer}layer_norm2.weight"], params[f"{VIT}/LayerNorm_1/scale"][i])
    embed = sd[lm + "embed_tokens.weight"]
    assert embed.shape == (V + 64, Dt)
    eq(embed[:V], params["llm/embedder/input_embedding"])
    eq(sd[lm + "norm.weight"], params["llm/final_norm/scale"])
    for i in range(t.depth):
        layer = f"{lm}layers.{i}."
        kv = params["llm/layers/attn/kv_einsum/w"][i]
        eq(sd[layer + "self_attn.q_proj.weight"],
           params["llm/layers/attn/q_einsum/w"][i].transpose(0, 2, 1).reshape(N * Ht, Dt))
        eq(sd[layer + "self_attn.k_proj.weight"], kv[0].transpose(0, 2, 1).reshape(K * Ht, Dt))
        eq(sd[layer + "self_attn.v_proj.weight"], kv[1].transpose(0, 2, 1).reshape(K * Ht, Dt))
        eq(sd[layer + "self_attn.o_proj.weight"],
           params["llm/layers/attn/attn_vec_einsum/w"][i].transpose(2, 0, 1).reshape(Dt, N * Ht))
        eq(sd[layer + "mlp.gate_proj.weight"], params["llm/layers/mlp/gating_einsum"][i, 0].T)
        eq(sd[layer + "mlp.up_proj.weight"], params["llm/layers/mlp/gating_einsum"][i, 1].T)
        eq(sd[layer + "mlp.down_proj.weight"], params["llm/layers/mlp/linear"][i].T)
        eq(sd[layer + "input_layernorm.weight"], params["llm/layers/pre_attention_norm/scale"][i])
        eq(sd[layer + "post_feedforward_layernorm.weight"], params["llm/layers/post_ffw_norm/scale"][i])


def test_transformers_config_matches(hf_f32, cfg):
    c = hf_f32[0].config
    t, v = c.text_config, c.vision_config
    assert (c.model_type, t.model_type, v.model_type) == ("paligemma", "gemma2", "siglip_vision_model")
    assert c.image_token_index == cfg.text.vocab_size
    assert t.vocab_size == cfg.text.vocab_size + 64
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
            t.head_dim, t.query_pre_attn_scalar) == (64, 128, 4, 4, 2, 16, 16)
    assert (t.attn_logit_softcapping, t.final_logit_softcapping, t.sliding_window) == (50.0, 30.0, 16)
    assert t.layer_types == ["sliding_attention", "full_attention"] * 2
    assert t.rope_parameters["rope_theta"] == 10000.0 and t.hidden_activation == "gelu_pytorch_tanh"
    assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size,
            v.image_size, v.vision_use_head) == (48, 96, 2, 4, 14, 56, False)
    assert v.projection_dim == cfg.text.width


def test_final_softcap_zero_is_written_as_null_and_read_back(tmp_path, cfg, params):
    cfg0 = cfg.replace(final_logit_softcap=0.0)
    path = write_hf(tmp_path / "hf", params, cfg0)
    doc = json.loads((path / "config.json").read_text())
    assert doc["text_config"]["final_logit_softcapping"] is None
    assert detect_variant(path).text.final_logit_softcap == 0.0
    model, _, _ = _load(path)
    assert model.config.text_config.final_logit_softcapping is None


def test_we_read_what_transformers_saves(tmp_path, hf_f32, params):
    """A model built in transformers 5.24 saves `vision_tower.embeddings…` (no `vision_model`).

    (A model loaded from legacy names saves them back unchanged, so build a fresh one.)
    """
    fresh = PaliGemmaForConditionalGeneration(hf_f32[0].config)
    fresh.load_state_dict(hf_f32[0].state_dict())
    fresh.save_pretrained(tmp_path / "saved")
    names = set(load_file(tmp_path / "saved" / "model.safetensors"))
    assert "vision_tower.embeddings.patch_embedding.weight" in names
    got_cfg, got = load_checkpoint(tmp_path / "saved")
    assert got_cfg.name == "tiny-56"
    assert_trees_equal(got, params)


def test_we_read_the_new_model_prefixed_names(tmp_path, written, params):
    """`model.vision_tower.vision_model.…`, `model.language_model.layers…`, `lm_head.weight` (ignored)."""
    src = load_file(written["safetensors", "bfloat16"] / "model.safetensors")
    renamed = {"model." + k.replace("language_model.model.", "language_model."): v for k, v in src.items()}
    renamed["lm_head.weight"] = src["language_model.model.embed_tokens.weight"].clone()
    (tmp_path / "new").mkdir()
    save_file(renamed, tmp_path / "new" / "model.safetensors", metadata={"format": "pt"})
    _, got = load_checkpoint(tmp_path / "new")
    assert_trees_equal(got, cast(params, np.dtype(ml_dtypes.bfloat16)))
