"""DESIGN §6 rung 4 for ONNX: quantized parts equal the numpy fake-quant reference of their recipe."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from calibration_inputs import random_hessians
from part_feeds import random_feeds

from pg2edge.export.onnx_export import export_parts
from pg2edge.export.onnx_quant import QuantizedWeights
from pg2edge.export.split import SplitConfig, split_model
from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize.recipes import fake_quant_params, get_recipe

SPLIT = SplitConfig(max_len=64, prefill_lens=(8,))




@pytest.fixture(scope="module")
def np_params(tiny_params):
    return unflatten({k: np.asarray(v) for k, v in flatten(tiny_params).items()})


@pytest.mark.parametrize("recipe_name, block", [("int8", 32), ("int4", 32), ("mixed", 32)])
def test_quantized_parts_match_fake_quant_reference(tiny_cfg, np_params, tmp_path, recipe_name, block):
    recipe = get_recipe(recipe_name, block)
    parts = split_model(tiny_cfg, SPLIT)
    infos = export_parts(parts, np_params, tmp_path, QuantizedWeights(recipe, accuracy_level=0))
    ref_params = unflatten(fake_quant_params(flatten(np_params), recipe))
    rs = np.random.RandomState(1)
    for part in parts:
        ops = infos[part.name].ops
        assert ops.get("MatMulNBits", 0) > 0, f"{part.name}: no MatMulNBits in {ops}"
        session = ort.InferenceSession(str(infos[part.name].path), providers=["CPUExecutionProvider"])
        feeds = random_feeds(part, rs)
        got = session.run([s.name for s in part.outputs], feeds)
        ref = part.fn(ref_params, *feeds.values())
        for spec, r, o in zip(part.outputs, ref, got):
            np.testing.assert_allclose(o, np.asarray(r), atol=2e-4, rtol=2e-4, err_msg=f"{part.name}:{spec.name}")


def test_gptq_codes_reach_the_kernels(tiny_cfg, np_params, tmp_path):
    """With a recipe's Hessians, the artifact computes with GPTQ's codes (fused gate/up and q/k/v included)."""
    recipe = replace(get_recipe("mixed", 32), hessians=random_hessians(np_params))
    parts = [p for p in split_model(tiny_cfg, SPLIT) if p.name == "decode"]
    infos = export_parts(parts, np_params, tmp_path, QuantizedWeights(recipe, accuracy_level=0))
    gptq_ref = unflatten(fake_quant_params(flatten(np_params), recipe))
    nearest_ref = unflatten(fake_quant_params(flatten(np_params), replace(recipe, hessians=None)))
    session = ort.InferenceSession(str(infos["decode"].path), providers=["CPUExecutionProvider"])
    feeds = random_feeds(parts[0], np.random.RandomState(2))
    got = session.run([s.name for s in parts[0].outputs], feeds)
    np.testing.assert_allclose(got[0], np.asarray(parts[0].fn(gptq_ref, *feeds.values())[0]), atol=2e-4, rtol=2e-4)
    assert np.abs(got[0] - np.asarray(parts[0].fn(nearest_ref, *feeds.values())[0])).max() > 1e-2


def test_int4_decoder_shares_one_table_and_stores_weights_once(tiny_cfg, np_params, tmp_path):
    recipe = get_recipe("int4", 32)
    parts = split_model(tiny_cfg, SplitConfig(max_len=64, prefill_lens=(8, 16)))
    infos = export_parts(parts, np_params, tmp_path, QuantizedWeights(recipe))
    decode = onnx.load(str(infos["decode"].path), load_external_data=False)
    ops = [n.op_type for n in decode.graph.node]
    assert "GatherBlockQuantized" in ops and "Gather" not in ops
    gbq = next(n for n in decode.graph.node if n.op_type == "GatherBlockQuantized")
    head = [n for n in decode.graph.node if n.op_type == "MatMulNBits" and n.input[1] == gbq.input[0]]
    assert len(head) == 1, "the LM head must read the embedding's int4 codes"
    # both prefill buckets and decode reference the same bytes: the file holds each weight once
    data = tmp_path / "weights.onnx.data"
    int4_bytes = sum(int(np.prod(t.dims)) for t in decode.graph.initializer if t.data_type == onnx.TensorProto.UINT8)
    assert data.stat().st_size < 1.6 * int4_bytes + 3 * 2**20
