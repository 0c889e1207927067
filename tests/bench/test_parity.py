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


def test_verdict_judges_point_estimates_and_their_intervals():
    result = {"model": "m", "images": 4, "examples": 8,
              "reference": {"task_metrics": {"caption": 3.0, "ocr": 0.5}, "primary": {"caption": "cider_d",
                                                                                   "ocr": "cer"}},
              "rows": [_row("onnx-mixed", "mixed", {"caption": -0.002, "ocr": 0.001}, half=0.005),
                       _row("tflite-mixed", "mixed", {"caption": 0.04, "ocr": 0.03}),
                       _row("onnx-int4", "int4", {"caption": -0.3, "ocr": 0.2}),
                       _row("tflite-mixed", "mixed", {"caption": 0.05, "ocr": -0.005}, half=0.1)]}
    lines = verdict(result)
    assert len(lines) == 3  # only the mixed rows
    # caption -0.2 and ocr +0.1 points, intervals +-0.5: the far ends lose 0.7 and 0.6 points.
    assert lines[0] == ("- `onnx-mixed`: within 1 point on every task metric, shown at 95 %: no loss bound "
                        "exceeds 0.7 points (caption).")
    assert lines[1] == "- `tflite-mixed`: NOT within 1 point: ocr loses 3.0 points."  # cer: higher is worse
    assert lines[2] == ("- `tflite-mixed`: within 1 point on every task metric's point estimate (largest loss 0.0, "
                        "ocr), not resolved: the 95 % bound on ocr's loss is 9.5 points over 100 examples.")
    md = markdown(result)
    assert "| -0.2 ±0.5 | +0.1 ±0.5 |" in md and lines[1] in md


def test_task_intervals_are_centred_on_the_metric_change():
    from types import SimpleNamespace

    from pg2edge.bench.parity import task_delta_cis

    examples = [SimpleNamespace(task="ocr")] * 4 + [SimpleNamespace(task="color")] * 2
    ref = [0.5, 1.0, 2.0, 0.0, 1.0, 0.0]
    new = [0.5, 0.0, 2.0, 1.0, 1.0, 1.0]  # ocr: per-example mean unchanged; color: +0.5
    cis = task_delta_cis(examples, ref, new, {"ocr": 0.1, "color": 0.5})  # a pooled CER moved by +0.1
    assert cis["ocr"]["delta"] == 0.1 and cis["ocr"]["per_example_delta"] == 0.0
    assert cis["ocr"]["lo"] < 0.1 < cis["ocr"]["hi"] and cis["ocr"]["n"] == 4
    assert cis["color"]["delta"] == cis["color"]["per_example_delta"] == 0.5
