"""Recipes pick the right scheme per real param name; fake-quant follows the model's own contractions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pg2edge.config import ConfigError, get_config
from pg2edge.param_layout import param_shapes, unflatten
from pg2edge.quantize import (Recipe, Scheme, fake_quant, fake_quant_params, get_recipe, is_matmul_weight,
                              matmul_view, quantize_param)

VIT = "img/Transformer/encoderblock"
ATT = f"{VIT}/MultiHeadDotProductAttention_0"


def _rows(x, shape):
    return x.reshape(x.shape[0], *shape)


# Each matmul weight as pg2edge.model contracts it: f(x [B, K], one matmul's slice of w) -> [B, N].
# Independent of matmul_view, so the tests below check its table against the model's einsums.
CONTRACTIONS = {
    "img/embedding/kernel": (0, lambda x, w: x @ w.reshape(-1, w.shape[-1])),
    f"{ATT}/query/kernel": (1, lambda x, w: np.einsum("bd,dhk->bhk", x, w).reshape(len(x), -1)),
    f"{ATT}/key/kernel": (1, lambda x, w: np.einsum("bd,dhk->bhk", x, w).reshape(len(x), -1)),
    f"{ATT}/value/kernel": (1, lambda x, w: np.einsum("bd,dhk->bhk", x, w).reshape(len(x), -1)),
    f"{ATT}/out/kernel": (1, lambda x, w: np.einsum("bhk,hkd->bd", _rows(x, w.shape[:2]), w)),
    f"{VIT}/MlpBlock_0/Dense_0/kernel": (1, lambda x, w: x @ w),
    f"{VIT}/MlpBlock_0/Dense_1/kernel": (1, lambda x, w: x @ w),
    "img/head/kernel": (0, lambda x, w: x @ w),
    "llm/embedder/input_embedding": (0, lambda x, w: np.einsum("bd,vd->bv", x, w)),
    "llm/layers/attn/q_einsum/w": (1, lambda x, w: np.einsum("bd,ndh->bnh", x, w).reshape(len(x), -1)),
    "llm/layers/attn/kv_einsum/w": (2, lambda x, w: np.einsum("bd,kdh->bkh", x, w).reshape(len(x), -1)),
    "llm/layers/attn/attn_vec_einsum/w": (1, lambda x, w: np.einsum("bnh,nhd->bd", _rows(x, w.shape[:2]), w)),
    "llm/layers/mlp/gating_einsum": (2, lambda x, w: x @ w),
    "llm/layers/mlp/linear": (1, lambda x, w: x @ w),
}


@pytest.fixture(scope="module")
def tiny_shapes():
    return param_shapes(get_config("tiny"))


@pytest.fixture(scope="module")
def tiny_random(tiny_shapes):
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape).astype(np.float32) * 0.05 for name, shape in tiny_shapes.items()}


def _model_matrix(name, w_slice, k):
    """The [K, N] matrix of the model's linear map, read off by contracting the identity."""
    return CONTRACTIONS[name][1](np.eye(k, dtype=np.float32), w_slice)


def test_every_matmul_weight_has_a_view_and_a_contraction(tiny_shapes):
    matmuls = {n for n in tiny_shapes if is_matmul_weight(n)}
    assert matmuls == set(CONTRACTIONS)
    for name in set(tiny_shapes) - matmuls:
        assert name.endswith(("/scale", "/bias", "pos_embedding")), name
        assert matmul_view(name, tiny_shapes[name]) is None


@pytest.mark.parametrize("size", ["tiny", "3B"])
def test_view_matches_model_contraction(size):
    shapes = param_shapes(get_config(size))
    rng = np.random.default_rng(1)
    for name, (lead, contract) in CONTRACTIONS.items():
        shape = shapes[name]
        view = matmul_view(name, shape)
        assert view.lead_shape == shape[:lead]
        if size != "tiny":
            continue  # 3B: shapes and K/N only (too large to contract here)
        w = rng.standard_normal(shape).astype(np.float32)
        w_kn = view.to_kn(w)
        for index in np.ndindex(*view.lead_shape):
            np.testing.assert_array_equal(w_kn[index], _model_matrix(name, w[index], view.k))
        np.testing.assert_array_equal(view.from_kn(w_kn), w)


def test_3b_k_and_n():
    shapes = param_shapes(get_config("3B"))
    kn = {name: (matmul_view(name, shapes[name]).k, matmul_view(name, shapes[name]).n) for name in CONTRACTIONS}
    assert kn["img/embedding/kernel"] == (588, 1152)
    assert kn[f"{ATT}/query/kernel"] == (1152, 1152) and kn[f"{ATT}/out/kernel"] == (1152, 1152)
    assert kn[f"{VIT}/MlpBlock_0/Dense_1/kernel"] == (4304, 1152)
    assert kn["llm/embedder/input_embedding"] == (2304, 257152)
    assert kn["llm/layers/attn/q_einsum/w"] == (2304, 2048)
    assert kn["llm/layers/attn/kv_einsum/w"] == (2304, 1024)
    assert kn["llm/layers/attn/attn_vec_einsum/w"] == (2048, 2304)
    assert kn["llm/layers/mlp/gating_einsum"] == (2304, 9216)
    assert kn["llm/layers/mlp/linear"] == (9216, 2304)


def test_wrong_rank_is_an_error():
    with pytest.raises(ValueError, match=r"llm/layers/mlp/linear: expected a rank-3 weight, found shape \(64, "):
        matmul_view("llm/layers/mlp/linear", (64, 64))


I8, I4 = "int8-pc", "int4-b32-mse"
EXPECTED_3B = {  # recipe -> key suffix -> scheme label at 3B-224 (block 32)
    "int8": {name: I8 for name in CONTRACTIONS},
    "int4": {**{name: I4 for name in CONTRACTIONS},
             # K = 588 and K = 4304 are not multiples of 32: int8 per-channel fallback.
             "img/embedding/kernel": I8, f"{VIT}/MlpBlock_0/Dense_1/kernel": I8},
    "mixed": {name: (I4 if name.startswith("llm/layers/mlp/") else I8) for name in CONTRACTIONS},
    "f32": {name: None for name in CONTRACTIONS},
}


@pytest.mark.parametrize("recipe_name", sorted(EXPECTED_3B))
def test_recipe_schemes_3b(recipe_name):
    shapes = param_shapes(get_config("3B"))
    recipe = get_recipe(recipe_name)
    for name, shape in shapes.items():
        scheme = recipe.scheme_for(name, shape)
        assert (None if scheme is None else scheme.label) == EXPECTED_3B[recipe_name].get(name), name


def test_recipe_schemes_tiny(tiny_shapes):
    mixed, int4 = get_recipe("mixed"), get_recipe("int4", block=64)
    for name, shape in tiny_shapes.items():
        m, i = mixed.scheme_for(name, shape), int4.scheme_for(name, shape)
        if not is_matmul_weight(name):
            assert m is None and i is None, name
        elif name.startswith("llm/layers/mlp/"):
            assert m == Scheme(4, 32, clip="mse"), name
        else:
            assert m == Scheme(8), name
    # tiny vision width 48 and patch K 588 are not multiples of 64; the text tower (64, 128) is.
    assert int4.scheme_for(f"{ATT}/query/kernel", tiny_shapes[f"{ATT}/query/kernel"]) == Scheme(8)
    assert int4.scheme_for("llm/layers/mlp/linear", tiny_shapes["llm/layers/mlp/linear"]) == Scheme(4, 64, clip="mse")
    assert int4.scheme_for("llm/layers/mlp/linear") == Scheme(4, 64, clip="mse")  # no shape: the rule, unchecked


def test_never_quantized_even_by_a_catch_all_rule():
    recipe = Recipe(name="all", block=32, rules=(("*", Scheme(8)),))
    for name in ("img/pos_embedding", "llm/final_norm/scale", "img/head/bias", f"{VIT}/LayerNorm_0/scale"):
        assert recipe.scheme_for(name) is None


def test_first_match_wins_glob_and_regex():
    recipe = Recipe(name="custom", block=32, rules=(
        ("re:llm/layers/mlp/(linear|gating_einsum)", Scheme(4, 64)),
        ("llm/layers/*", Scheme(4, 32)),
        ("img/*", None),
        ("*", Scheme(8)),
    ))
    assert recipe.scheme_for("llm/layers/mlp/linear") == Scheme(4, 64)
    assert recipe.scheme_for("llm/layers/attn/q_einsum/w") == Scheme(4, 32)
    assert recipe.scheme_for("img/head/kernel") is None
    assert recipe.scheme_for("llm/embedder/input_embedding") == Scheme(8)


def test_get_recipe_errors_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"^unknown quantization recipe 'int2': expected one of f32, int8, int4, "
                                          r"mixed$"):
        get_recipe("int2")
    with pytest.raises(ConfigError, match=r"^quantization block 48: expected one of 32, 64, 128$"):
        get_recipe("int4", block=48)
    with pytest.raises(ConfigError, match=r"^int4 clip 'l1': expected one of max, mse$"):
        get_recipe("int4", clip="l1")
    assert get_recipe("int4", clip="max").scheme_for("llm/layers/mlp/linear") == Scheme(4, 32)


def test_recipe_options_and_manifest_dict():
    recipe = get_recipe("MIXED", block=128, scale_dtype="float16")
    assert recipe.name == "mixed" and recipe.block == 128
    assert recipe.scheme_for("llm/layers/mlp/linear") == Scheme(4, 128, "float16", "mse")
    assert recipe.scheme_for("img/head/kernel") == Scheme(8, None, "float16")
    d = json.loads(json.dumps(recipe.to_dict()))
    assert d["name"] == "mixed" and d["block"] == 128
    int8 = {"bits": 8, "block": None, "scale_dtype": "float16", "clip": "max"}
    assert d["rules"][0] == {"pattern": "img/*", "scheme": int8}
    assert d["rules"][3] == {"pattern": "llm/layers/*",
                             "scheme": {"bits": 4, "block": 128, "scale_dtype": "float16", "clip": "mse"}}
    assert d["fallback"] == int8


@pytest.mark.parametrize("recipe_name", ["int8", "int4", "mixed"])
def test_fake_quant_params_equals_per_layer_per_matmul_quantization(tiny_random, recipe_name):
    recipe = get_recipe(recipe_name)
    out = fake_quant_params(tiny_random, recipe)
    assert out.keys() == tiny_random.keys()
    for name, w in tiny_random.items():
        scheme = recipe.scheme_for(name, w.shape)
        if scheme is None:
            assert out[name] is w, name
            continue
        assert out[name].shape == w.shape and out[name].dtype == np.float32
        lead, _ = CONTRACTIONS[name]
        k = matmul_view(name, w.shape).k
        for index in np.ndindex(*w.shape[:lead]):
            expected = fake_quant(_model_matrix(name, w[index], k), scheme)
            np.testing.assert_array_equal(_model_matrix(name, out[name][index], k), expected, err_msg=name)


def test_fake_quant_params_keeps_nested_trees_nested(tiny_random):
    out = fake_quant_params(unflatten(tiny_random), get_recipe("mixed"))
    assert set(out) == {"img", "llm"}
    assert out["llm"]["final_norm"]["scale"] is tiny_random["llm/final_norm/scale"]


def test_f32_recipe_is_identity(tiny_random):
    out = fake_quant_params(tiny_random, get_recipe("f32"))
    assert all(out[name] is w for name, w in tiny_random.items())


def test_quantize_param_keys_are_lead_indices(tiny_random):
    kv = quantize_param("llm/layers/attn/kv_einsum/w", tiny_random["llm/layers/attn/kv_einsum/w"], Scheme(4, 32))
    assert sorted(kv) == [(layer, i) for layer in range(4) for i in range(2)]
    assert kv[(0, 1)].shape_kn == (64, 32)
    with pytest.raises(ValueError, match=r"llm/layers/mlp/linear\[0\]: contraction dim K=128"):
        quantize_param("llm/layers/mlp/linear", tiny_random["llm/layers/mlp/linear"], Scheme(4, 256))
    with pytest.raises(ValueError, match="img/pos_embedding: not a matmul weight"):
        quantize_param("img/pos_embedding", tiny_random["img/pos_embedding"], Scheme(8))
