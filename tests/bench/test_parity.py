"""The parity report's verdict: the worst task-metric loss of each `mixed` row, judged against 1 point."""

from __future__ import annotations

from pg2edge.bench.parity import markdown, verdict, worse_by


def _row(artifact: str, quant: str, delta: dict, half: float = 0.02) -> dict:
    ci = {t: {"delta": d, "lo": d - half, "hi": d + half, "n": 100} for t, d in delta.items()}
    return {"artifact": artifact, "format": artifact.split("-")[0], "quant": quant, "source_model": "m",
            "top1_agreement": 0.99, "greedy_exact_match": 0.9, "kl": 1e-3, "cosine_mean": 0.999,
            "cosine_min": 0.9, "task_metric_delta": delta, "task_delta_ci": ci}


def test_worse_by_respects_lower_is_better():
    assert worse_by("cider_d", -0.02) == 0.02 and worse_by("cer", -0.02) == -0.02


def test_verdict_names_the_worst_loss_and_judges_it():
    result = {"model": "m", "images": 4, "examples": 8,
              "reference": {"task_metrics": {"caption": 3.0, "ocr": 0.5}, "primary": {"caption": "cider_d",
                                                                                   "ocr": "cer"}},
              "rows": [_row("onnx-mixed", "mixed", {"caption": -0.005, "ocr": 0.008}),
                       _row("tflite-mixed", "mixed", {"caption": 0.04, "ocr": 0.03}),
                       _row("onnx-int4", "int4", {"caption": -0.3, "ocr": 0.2})]}
    lines = verdict(result)
    assert len(lines) == 2  # only the mixed rows
    assert lines[0].startswith("- `onnx-mixed` is within 1 point") and "+0.8 points (ocr" in lines[0]
    assert lines[1].startswith("- `tflite-mixed` is NOT within 1 point") and "+3.0 points (ocr" in lines[1]
    assert "half-width 2.0 points over 100 examples" in lines[1]
    md = markdown(result)
    assert "| -0.5 ±2.0 | +0.8 ±2.0 |" in md and lines[1] in md
