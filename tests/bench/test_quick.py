"""`pg2edge bench --quick` writes parity rows for every artifact, speed figures and the machine."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pg2edge.cli import main

ROW_KEYS = {"artifact", "format", "quant", "top1_agreement", "greedy_exact_match", "kl", "task_metric_delta"}


def test_bench_quick_json_has_parity_rows_speed_and_machine(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--quick", "--images", "1", "--format", "onnx",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench_quick.json").read_text())
    rows = {r["artifact"]: r for r in data["parity"]["rows"]}
    assert set(rows) == {"onnx-f32", "onnx-int8", "onnx-int4", "onnx-mixed", "onnx-mixed-gptq", "onnx-qat-int4"}
    assert rows["onnx-mixed-gptq"]["gptq_images"] == 16 and rows["onnx-mixed"]["gptq_images"] == 0
    for row in rows.values():
        assert ROW_KEYS <= set(row) and 0.0 <= row["top1_agreement"] <= 1.0 and row["kl"] >= 0.0
        assert set(row["task_metric_delta"]) == set(data["parity"]["reference"]["task_metrics"])
        assert set(row["task_delta_ci"]) == set(row["task_metric_delta"])
        assert all(ci["lo"] <= ci["delta"] <= ci["hi"] for ci in row["task_delta_ci"].values())
    f32 = rows["onnx-f32"]
    assert f32["greedy_exact_match"] == 1.0 and f32["top1_agreement"] == 1.0 and f32["kl"] < 1e-6
    assert all(v == 0.0 for v in f32["task_metric_delta"].values())
    assert all(ci["lo"] == ci["hi"] == 0.0 for ci in f32["task_delta_ci"].values())
    assert rows["onnx-int8"]["kl"] < rows["onnx-int4"]["kl"]  # fewer bits, further from float
    speed = data["speed"]["artifacts"]
    assert set(speed) == {"onnx-f32", "onnx-int8", "onnx-int4"} and all(s["decode_tok_s"] > 0 for s in speed.values())
    assert data["machine"]["cores_usable"] >= 1 and "onnxruntime" in data["machine"]["packages"]
    md = (tmp_path / "bench_quick.md").read_text()
    assert "| onnx-int4 |" in md and "- `onnx-mixed`: " in md and "| onnx-mixed-gptq | onnx | mixed gptq |" in md
