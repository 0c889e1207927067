"""Output error on a calibration batch: each weight measured in isolation, on the float activations it sees."""

from __future__ import annotations

import numpy as np
import pytest

from pg2edge.quantize import fake_quant_param, get_recipe
from pg2edge.quantize.calibration import annotate_output_errors, output_errors

LAYERS, WIDTH, MLP = 2, 64, 128


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    return {"llm": {"layers": {"mlp": {
        "gating_einsum": rng.standard_normal((LAYERS, 2, WIDTH, MLP)).astype(np.float32) * WIDTH ** -0.5,
        "linear": rng.standard_normal((LAYERS, MLP, WIDTH)).astype(np.float32) * MLP ** -0.5}}}}


def _mlp_stack(p, x):
    """Two layers of x @ gate @ linear (stacked big_vision weights sliced per layer, as the model does)."""
    mlp = p["llm"]["layers"]["mlp"]
    for i in range(LAYERS):
        x = (x @ mlp["gating_einsum"][i, 0]) @ mlp["linear"][i]
    return (x,)


def _rel(y, y_q) -> tuple[float, float]:
    d = (y_q - y).astype(np.float64)
    return float(np.vdot(d, d)), float(np.vdot(y.astype(np.float64), y.astype(np.float64)))


def test_each_weight_is_measured_on_float_inputs_over_all_layers(params):
    x = np.random.default_rng(1).standard_normal((3, WIDTH)).astype(np.float32)
    errors = output_errors(_mlp_stack, params, get_recipe("int4"), [(x,)])
    mlp = params["llm"]["layers"]["mlp"]
    scheme = get_recipe("int4").scheme_for("llm/layers/mlp/linear", mlp["linear"].shape)
    gate_q = fake_quant_param("llm/layers/mlp/gating_einsum", mlp["gating_einsum"], scheme)
    lin_q = fake_quant_param("llm/layers/mlp/linear", mlp["linear"], scheme)
    sums = {"gate": [0.0, 0.0], "linear": [0.0, 0.0]}
    h = x.astype(np.float64)
    for i in range(LAYERS):  # float activations throughout; only the weight under test is quantized
        g = h @ mlp["gating_einsum"][i, 0]
        e, n = _rel(g, h @ gate_q[i, 0])
        sums["gate"][0] += e
        sums["gate"][1] += n
        y = g @ mlp["linear"][i]
        e, n = _rel(y, g @ lin_q[i])
        sums["linear"][0] += e
        sums["linear"][1] += n
        h = y
    assert errors["llm/layers/mlp/gating_einsum"] == pytest.approx(np.sqrt(sums["gate"][0] / sums["gate"][1]), rel=1e-3)
    assert errors["llm/layers/mlp/linear"] == pytest.approx(np.sqrt(sums["linear"][0] / sums["linear"][1]), rel=1e-3)
    assert 0.01 < errors["llm/layers/mlp/linear"] < 0.3  # int4 block 32 on Gaussian weights


def test_int8_is_far_below_int4_and_f32_measures_nothing(params):
    x = np.random.default_rng(2).standard_normal((4, WIDTH)).astype(np.float32)
    int8 = output_errors(_mlp_stack, params, get_recipe("int8"), [(x,)])
    int4 = output_errors(_mlp_stack, params, get_recipe("int4"), [(x,), (2 * x,)])
    assert set(int8) == set(int4) == {"llm/layers/mlp/gating_einsum", "llm/layers/mlp/linear"}
    assert all(int8[n] * 4 < int4[n] for n in int8)
    assert output_errors(_mlp_stack, params, get_recipe("f32"), [(x,)]) == {}


def test_annotate_adds_the_column_only_where_measured():
    rows = [{"name": "a"}, {"name": "b"}]
    assert annotate_output_errors(rows, {"b": 0.5}) == [{"name": "a"}, {"name": "b", "output_rel_error": 0.5}]
