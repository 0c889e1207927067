"""TFLite parts: float == `pg2edge.model` (DESIGN §6 rung 3); quantized == numpy fake-quant (rung 4).

Each recipe is converted once per module; the tests read the files back with
the LiteRT interpreter (XNNPACK, as on a phone) and the flatbuffer reader.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from calibration_inputs import random_hessians
from part_feeds import random_feeds

from pg2edge.export.split import SplitConfig, split_model
from pg2edge.export.tflite import TFLiteExportError, export_tflite, float_tflite, read_weight_dtypes
from pg2edge.export.tflite_flatbuffer import read_weights, weight_ops
from pg2edge.model import generate
from pg2edge.param_layout import flatten
from pg2edge.quantize import Recipe, Scheme, fake_quant_params, get_recipe
from pg2edge.quantize.schemes import dequantize

SPLIT = SplitConfig(max_len=64, prefill_lens=(8,))
PROMPT = [2, 300, 301, 302, 108]
RECIPES = {
    "f32": get_recipe("f32"),
    "int8": get_recipe("int8"),  # dynamic-range kernels (int8 activations), as at full size
    "int8_exact": get_recipe("int8"),  # weight-only: DEQUANTIZE -> float op, equal to the reference
    # TFLite stores block-wise scales as float16: the reference uses the same scales
    "int4": get_recipe("int4", 32, scale_dtype="float16"),
    "int4_pc": Recipe("int4_pc", 32, (("*", Scheme(bits=4)),)),  # per-channel int4: the exact weight-only path
    "mixed": get_recipe("mixed", 32, scale_dtype="float16"),
}
ALL_PARTS = ("vision", "prefill_8", "decode")
PARTS_PER_RECIPE = {"f32": ALL_PARTS, "int8": ALL_PARTS, "int8_exact": ALL_PARTS, "int4": ALL_PARTS,
                    "int4_pc": ("decode",), "mixed": ("vision", "decode")}
EXACT = ("int8_exact", "int4_pc")


@pytest.fixture(scope="module")
def parts(tiny_cfg):
    return split_model(tiny_cfg, SPLIT)


@pytest.fixture(scope="module")
def exported(parts, tiny_params, tmp_path_factory):
    """recipe name -> part name -> TFLiteInfo; each part is converted once and quantized per recipe."""
    float_models = {p.name: float_tflite(p, tiny_params) for p in parts}
    out = {}
    for name, recipe in RECIPES.items():
        folder = tmp_path_factory.mktemp(f"tflite_{name}")
        out[name] = {p.name: export_tflite(p, tiny_params, folder / f"{p.name}.tflite", recipe, float_models[p.name],
                                           exact=name in EXACT)
                     for p in parts if p.name in PARTS_PER_RECIPE[name]}
    return out


def _runner(info):
    return Interpreter(model_path=str(info.path)).get_signature_runner(info.signature)




def _compare_parts(parts, infos, params, atol, rtol):
    rs = np.random.RandomState(0)
    for part in (p for p in parts if p.name in infos):
        feeds = random_feeds(part, rs)
        got = _runner(infos[part.name])(**feeds)
        ref = jax.jit(part.fn)(params, *(feeds[s.name] for s in part.inputs))
        for spec, r in zip(part.outputs, ref):
            np.testing.assert_allclose(got[spec.name], np.asarray(r), atol=atol, rtol=rtol,
                                       err_msg=f"{part.name}:{spec.name}")


def _greedy(parts, infos, pixels, n_tokens):
    """The runtime's loop over the TFLite parts: numpy cache written in place from new_k_i / new_v_i."""
    vision, prefill, decode = parts
    run = {p.name: _runner(infos[p.name]) for p in parts}
    img = run["vision"](pixels=pixels)["image_embeds"]
    tokens = np.zeros((1, 8), np.int32)
    tokens[0, :len(PROMPT)] = PROMPT
    valid = np.array([img.shape[1] + len(PROMPT)], np.int32)
    out = run[prefill.name](image_embeds=img, tokens=tokens, valid_len=valid)
    cache = {s.name: s.zeros() for s in decode.inputs[2:]}
    for name, buf in cache.items():
        buf[:, :, :out[f"new_{name}"].shape[2]] = out[f"new_{name}"]
    tokens_out, pos = [], int(valid[0])
    for _ in range(n_tokens):
        tokens_out.append(int(np.argmax(out["logits"][0])))
        out = run["decode"](token=np.array([tokens_out[-1]], np.int32), pos=np.array([pos], np.int32), **cache)
        for name, buf in cache.items():
            buf[:, :, pos:pos + 1] = out[f"new_{name}"]
        pos += 1
    return tokens_out


def _assert_reference_weights(info, params):
    """Every quantized weight in the file dequantizes to the numpy reference of its parameter matrix."""
    flat = flatten(params)
    stored = {w.scope: w.values for w in weight_ops(info.path)}
    for plan in info.weights:
        if plan.scheme is None:
            continue
        np.testing.assert_array_equal(stored[plan.scope], dequantize(plan.quantized(flat)).T, err_msg=plan.label)


def test_signature_is_the_part(exported, parts):
    for part in parts:
        info = exported["f32"][part.name]
        sigs = Interpreter(model_path=str(info.path)).get_signature_list()
        assert list(sigs) == [part.name]
        assert sorted(sigs[part.name]["inputs"]) == sorted(s.name for s in part.inputs)
        assert sorted(sigs[part.name]["outputs"]) == sorted(s.name for s in part.outputs)


def test_float_weights_feed_fully_connected(exported, tiny_cfg):
    """Builtin ops only; every weight is a FULLY_CONNECTED / EMBEDDING_LOOKUP constant (no BATCH_MATMUL)."""
    for info in exported["f32"].values():
        assert not {"CUSTOM", "DELEGATE"} & set(info.op_histogram)
        weights = read_weights(info.path)
        assert {w.op for w in weights} <= {"FULLY_CONNECTED", "EMBEDDING_LOOKUP"}
        assert len(weights) == len(info.weights) and "?" not in {w.param for w in info.weights}
        assert info.weight_dtypes == {"float32": len(weights)}
    decode = exported["f32"]["decode"]
    assert "EMBEDDING_LOOKUP" in decode.op_histogram
    table = [w for w in read_weights(decode.path) if w.shape == (tiny_cfg.text.vocab_size, tiny_cfg.text.width)]
    # the tied table is stored once: the embedding lookup and the LM head read the same tensor
    assert {w.op for w in table} == {"EMBEDDING_LOOKUP", "FULLY_CONNECTED"} and len({w.name for w in table}) == 1


def test_float_parts_match_model(exported, parts, tiny_params):
    _compare_parts(parts, exported["f32"], tiny_params, atol=1e-4, rtol=1e-3)


def test_float_greedy_stream_equals_generate(exported, parts, tiny_cfg, tiny_params, tiny_pixels):
    ours = _greedy(parts, exported["f32"], tiny_pixels[:1], 32)
    ref = generate(tiny_params, tiny_cfg, tiny_pixels[:1], [PROMPT], max_new_tokens=32, max_len=SPLIT.max_len)
    assert ours == ref.tokens[0]


@pytest.mark.parametrize("name, bits", [("int8_exact", "int8"), ("int4_pc", "int4")])
def test_weight_only_parts_match_fake_quant_exactly(exported, parts, tiny_params, name, bits):
    """Exact per-channel schemes are weight-only (DEQUANTIZE -> float op): equal to the reference to float rounding."""
    infos = exported[name]
    assert all(set(read_weight_dtypes(i.path).values()) == {bits} for i in infos.values())
    for info in infos.values():
        _assert_reference_weights(info, tiny_params)
    _compare_parts(parts, infos, fake_quant_params(tiny_params, RECIPES[name]), atol=1e-4, rtol=1e-4)


def test_int8_runs_int8_kernels_near_the_reference(exported, parts, tiny_params):
    """Default int8: FULLY_CONNECTED reads the int8 weights itself (no DEQUANTIZE, no float copy at run time)."""
    infos = exported["int8"]
    for info in infos.values():
        _assert_reference_weights(info, tiny_params)
        assert "DEQUANTIZE" not in info.op_histogram
        assert {w.mode for w in info.weights} <= {"dynamic", "lookup"}
        assert set(read_weight_dtypes(info.path).values()) == {"int8"}
    _compare_parts(parts, infos, fake_quant_params(tiny_params, RECIPES["int8"]), atol=0.1, rtol=0.02)


def test_int8_greedy_stream_equals_fake_quant_generate(exported, parts, tiny_cfg, tiny_params, tiny_pixels):
    fq = fake_quant_params(tiny_params, RECIPES["int8_exact"])
    ours = _greedy(parts, exported["int8_exact"], tiny_pixels[:1], 32)
    ref = generate(fq, tiny_cfg, tiny_pixels[:1], [PROMPT], max_new_tokens=32, max_len=SPLIT.max_len)
    assert ours == ref.tokens[0]


def test_int4_blockwise_weights_are_the_reference(exported, tiny_params):
    """Block-wise int4 codes and float16 scales are exactly the reference's; sizes shrink."""
    infos = exported["int4"]
    for info in infos.values():
        _assert_reference_weights(info, tiny_params)
        blockwise = [w for w in info.weights if w.scheme is not None and w.scheme.block == 32]
        assert blockwise and all(w.mode in ("dynamic", "lookup") for w in blockwise)
    decoder_dtypes = set(read_weight_dtypes(infos["decode"].path).values())
    assert decoder_dtypes == {"int4"}
    for name in ("prefill_8", "decode"):
        assert infos[name].size_bytes < exported["f32"][name].size_bytes / 4


def test_int4_blockwise_parts_match_fake_quant(exported, parts, tiny_params):
    """Block-wise int4 runs the dynamic-range kernel (int8 activations): close, not exact, to the reference.

    The float-vs-reference gap is ~1.2 on these logits; the kernel's activation rounding adds ~0.1.
    """
    _compare_parts(parts, exported["int4"], fake_quant_params(tiny_params, RECIPES["int4"]), atol=0.3, rtol=0.05)


def test_mixed_recipe_quantizes_what_it_says(exported, tiny_params):
    recipe = RECIPES["mixed"]
    flat = flatten(tiny_params)
    seen = set()
    for info in exported["mixed"].values():
        for plan in info.weights:
            want = recipe.scheme_for(plan.param, flat[plan.param].shape)
            assert (plan.scheme is None) == (want is None), plan.label
            if want is not None:
                assert (plan.scheme.bits, plan.scheme.block) == (want.bits, want.block), plan.label
                seen.add((plan.param.split("/")[0], plan.scheme.bits))
        _assert_reference_weights(info, tiny_params)
    assert {("img", 8), ("llm", 8), ("llm", 4)} <= seen
    dtypes = read_weight_dtypes(exported["mixed"]["decode"].path)
    assert sorted(set(dtypes.values())) == ["int4", "int8"]


def test_gptq_codes_are_what_the_file_stores(parts, tiny_params, tmp_path):
    """With a recipe's Hessians, every covered weight is stored as GPTQ's codes (not round-to-nearest's)."""
    recipe = replace(RECIPES["mixed"], hessians=random_hessians(tiny_params))
    decode = next(p for p in parts if p.name == "decode")
    info = export_tflite(decode, tiny_params, tmp_path / "decode.tflite", recipe)
    _assert_reference_weights(info, tiny_params)  # the plans quantize through the Hessians
    flat = flatten(tiny_params)
    covered = [w for w in info.weights if w.scheme is not None and w.param.startswith("llm/layers/")]
    assert covered and all(w.hessians is not None for w in covered)
    nearest = [replace(w, hessians=None) for w in covered]
    assert all(not np.array_equal(w.quantized(flat).q, n.quantized(flat).q) for w, n in zip(covered, nearest))


def test_export_refuses_missing_directory(parts, tiny_params, tmp_path):
    with pytest.raises(TFLiteExportError, match="does not exist"):
        export_tflite(parts[0], tiny_params, tmp_path / "missing" / "vision.tflite")


def test_export_leaves_only_the_file(exported):
    folder = exported["f32"]["vision"].path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["decode.tflite", "prefill_8.tflite", "vision.tflite"]
