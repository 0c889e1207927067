"""The quantization sweep: an f32 'variant' is the float model itself; quantized rows carry every field."""

from __future__ import annotations

from pg2edge.bench.quant_sweep import markdown, run_sweep


def test_sweep_rows_compare_each_fake_quant_with_float():
    result = run_sweep(images=2, variants=(("f32", "f32", 32, "mse", False), ("int4 b32 max", "int4", 32, "max", False),
                                           ("int8 gptq", "int8", 32, "mse", True)),
                       batch=8, gptq_images=3, log=lambda *_: None)
    f32, int4, gptq = result["rows"]
    tasks = set(result["reference"]["task_metrics"])
    assert result["examples"] >= 7 and set(f32["task_metric_delta"]) == tasks == set(int4["task_delta_ci"])
    # The f32 recipe quantizes nothing: identical greedy outputs, so every change and interval is exactly 0.
    assert f32["greedy_exact_match"] == 1.0 and set(f32["greedy_exact_by_task"].values()) == {1.0}
    assert all(v == 0.0 for v in f32["task_metric_delta"].values())
    assert all(ci["lo"] == ci["hi"] == 0.0 for ci in f32["task_delta_ci"].values())
    assert 0.0 <= int4["greedy_exact_match"] <= 1.0 and int4["int4_clip"] == "max" and int4["block"] == 32
    assert all(ci["lo"] <= ci["delta"] <= ci["hi"] for ci in int4["task_delta_ci"].values())
    assert gptq["gptq_images"] == 3 and int4["gptq_images"] == 0 and 0.0 <= gptq["greedy_exact_match"] <= 1.0
    md = markdown(result)
    assert "| f32 | 1.000 | 1.000 | +0.0 ±0.0 |" in md and "| int4 b32 max |" in md
