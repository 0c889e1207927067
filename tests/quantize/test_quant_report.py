"""The per-tensor error report: one row per matmul weight, JSON + markdown files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pg2edge.config import get_config
from pg2edge.param_layout import param_shapes
from pg2edge.quantize import error_report, get_recipe, is_matmul_weight, write_report


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in param_shapes(get_config("tiny")).items()}


def test_rows_cover_matmul_weights_with_plausible_errors(params):
    rows = {r["name"]: r for r in error_report(params, get_recipe("mixed"))}
    assert set(rows) == {n for n in params if is_matmul_weight(n)}
    linear = rows["llm/layers/mlp/linear"]
    assert linear["scheme"] == "int4-b32-mse" and linear["shape"] == [4, 128, 64]
    head = rows["img/head/kernel"]
    assert head["scheme"] == "int8-pc"
    # Gaussian weights: int8 per channel ~0.6%, int4 / 32 ~10% relative error.
    assert 1e-3 < head["rel_error"] < 2e-2 < 5e-2 < linear["rel_error"] < 0.2
    assert linear["rel_error"] <= linear["max_matmul_rel_error"]
    assert linear["quant_bytes"] == 4 * (128 * 64 // 2 + 64 * 4 * 4)  # 4 layers: codes + float32 scales


def test_f32_rows_have_zero_error(params):
    rows = error_report(params, get_recipe("f32"))
    assert all(r["scheme"] == "f32" and r["rel_error"] == 0.0 for r in rows)


def test_write_report(tmp_path, params):
    rows = error_report(params, get_recipe("int8"))
    rows[0]["output_rel_error"] = 0.0125  # the calibration hook
    json_path, md_path = write_report(rows, tmp_path / "out")
    assert json.loads(json_path.read_text()) == rows
    md = md_path.read_text().splitlines()
    assert md[0].startswith("| name | shape | scheme | rel_error") and md[0].endswith("| output_rel_error |")
    assert md[2].endswith("| 1.250e-02 |") and md[3].endswith("|  |")
    assert len([line for line in md if line.startswith("| `")]) == len(rows)
