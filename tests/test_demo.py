"""`make demo`'s job: the shipped model converts, runs on the runtime, scores, and agrees with JAX."""

from __future__ import annotations

from pg2edge.demo import run_demo
from pg2edge.shipped_model import shipped_model


def test_demo_scores_the_shipped_model_and_f32_onnx_agrees_with_jax(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo_out", images=3, quants=("f32",), formats=("onnx",), log=lines.append)
    jax_row, onnx_row = result.rows
    assert onnx_row.name == "onnx f32" and onnx_row.same_as_jax == 1.0
    assert onnx_row.report.metrics == jax_row.report.metrics
    assert result.examples == len(jax_row.report.predictions) >= 3
    html = result.report_html.read_text()
    assert "onnx f32" in html and html.count("<img") >= result.examples and "data:image/png;base64," in html
    table = "\n".join(lines).splitlines()
    assert any(line.startswith("jax f32 (reference)") for line in table)


def test_shipped_model_record_names_its_suite_and_command():
    model = shipped_model()
    assert model.config.name == "mini-112" and model.suite.res == 112
    assert "pg2edge finetune" in model.training["command"] and model.params.stat().st_size < 20 * 2**20
