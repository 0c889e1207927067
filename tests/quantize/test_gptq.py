"""GPTQ: codes in the scheme's own format that move a matmul's output less, found by content, captured in-graph."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pg2edge.quantize import Scheme, dequantize, get_recipe, quantize
from pg2edge.quantize.calibration import input_hessians
from pg2edge.quantize.gptq import Hessians, gptq_codes
from pg2edge.quantize.recipes import fake_quant_params

INT4 = Scheme(bits=4, block=32, clip="mse")
INT8 = Scheme(bits=8)


def _correlated_inputs(rows: int, k: int, seed: int) -> np.ndarray:
    """Activations with uneven channels mostly in a few directions, as a residual stream's are."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((k // 8, k)) * rng.uniform(0.2, 3.0, k)
    return rng.standard_normal((rows, k // 8)) @ basis + 0.1 * rng.standard_normal((rows, k))


def _out_err(x: np.ndarray, w: np.ndarray, w_hat: np.ndarray) -> float:
    return float(np.linalg.norm(x @ (w_hat.astype(np.float64) - w)))


@pytest.mark.parametrize("scheme", [INT4, INT8], ids=["int4-b32", "int8-pc"])
def test_gptq_moves_outputs_less_than_nearest_with_the_same_scales(scheme):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((128, 48)) * 0.05).astype(np.float32)
    x = _correlated_inputs(4000, 128, 1)  # one distribution: calibrate on half, judge on the other
    calib, held_out = x[:2000], x[2000:]
    h = Hessians()
    h.add(w, calib)
    nearest, calibrated = quantize(w, scheme), h.quantize(w, scheme)
    np.testing.assert_array_equal(calibrated.scales, nearest.scales)  # same format: only the codes differ
    assert calibrated.q.min() >= -scheme.qmax - 1 and calibrated.q.max() <= scheme.qmax
    assert _out_err(held_out, w, dequantize(calibrated)) < 0.5 * _out_err(held_out, w, dequantize(nearest))


def test_uncorrelated_unit_inputs_leave_little_to_gain():
    """With H = I there is nothing to trade between inputs: GPTQ is round-to-nearest (up to damping)."""
    w = (np.random.default_rng(2).standard_normal((64, 16)) * 0.1).astype(np.float32)
    nearest = quantize(w, INT4)
    codes = gptq_codes(w, nearest.scales, np.eye(64), INT4)
    np.testing.assert_array_equal(codes, nearest.q)


def test_fused_and_unseen_columns_are_found_by_content():
    rng = np.random.default_rng(3)
    gate, up, other = ((rng.standard_normal((64, 32)) * 0.1).astype(np.float32) for _ in range(3))
    x1, x2 = _correlated_inputs(500, 64, 4), _correlated_inputs(500, 64, 5)
    h = Hessians()
    h.add(gate, x1)
    h.add(up, x2)
    h.add(gate, x1[:100])  # the same weight again: accumulates into its Hessian
    assert len(h) == 2
    fused = h.quantize(np.concatenate([gate, up, other], axis=1), INT4)  # an exporter's gate ++ up (++ unseen)
    np.testing.assert_array_equal(fused.q[:32], h.quantize(gate, INT4).q)
    np.testing.assert_array_equal(fused.q[32:64], h.quantize(up, INT4).q)
    np.testing.assert_array_equal(fused.q[64:], quantize(other, INT4).q)  # no Hessian: nearest
    assert not np.array_equal(fused.q[:32], quantize(gate, INT4).q)
    with pytest.raises(ValueError, match="width 32 do not match a weight of K=64"):
        h.add(gate, x1[:, :32])


def _two_layer(p, x):
    mlp = p["llm"]["layers"]["mlp"]
    for i in range(2):
        x = (x @ mlp["gating_einsum"][i, 1]) @ mlp["linear"][i]
    return (x,)


def test_hessians_are_captured_in_the_traced_graph_and_drive_fake_quant():
    rng = np.random.default_rng(6)
    params = {"llm": {"layers": {"mlp": {
        "gating_einsum": (rng.standard_normal((2, 2, 64, 128)) * 0.1).astype(np.float32),
        "linear": (rng.standard_normal((2, 128, 64)) * 0.1).astype(np.float32)}}}}
    mlp = params["llm"]["layers"]["mlp"]
    batches = [(_correlated_inputs(n, 64, 7 + n).astype(np.float32),) for n in (40, 60)]  # shapes differ
    h = input_hessians(_two_layer, params, batches, include=lambda name: name.endswith("linear"))
    assert len(h) == 2  # one per layer of `linear`; the gating weights were not asked for
    x = np.concatenate([b[0] for b in batches]).astype(np.float64)
    hid = x @ mlp["gating_einsum"][0, 1]
    owner = h.owners(mlp["linear"][0])
    assert len(set(owner)) == 1 and owner[0] is not None
    expected = hid.T @ hid / len(hid)  # the graph computed `hid` in float32
    np.testing.assert_allclose(h.hessian(owner[0]), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert h.owners(mlp["gating_einsum"][0, 1]) == [None] * 128
    recipe = get_recipe("int4")
    plain = fake_quant_params(params, recipe)
    calibrated = fake_quant_params(params, replace(recipe, hessians=h))
    np.testing.assert_array_equal(calibrated["llm"]["layers"]["mlp"]["gating_einsum"],
                                  plain["llm"]["layers"]["mlp"]["gating_einsum"])
    lin, lin_plain = calibrated["llm"]["layers"]["mlp"]["linear"][0], plain["llm"]["layers"]["mlp"]["linear"][0]
    assert _out_err(hid, mlp["linear"][0], lin) < 0.8 * _out_err(hid, mlp["linear"][0], lin_plain)
