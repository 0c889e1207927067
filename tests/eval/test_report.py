"""`evaluate` with stand-in predictors: perfect answers score perfectly, order and progress are kept."""

from __future__ import annotations

import json

import pytest

from pg2edge.eval import EvalExample, evaluate, load_suite
from pg2edge.eval.scoring import primary_metric, score_task


class Echo:
    """Answers every example with its first reference (or a fixed text), recording batch sizes."""

    name = "echo"

    def __init__(self, text: str | None = None):
        self.text, self.batches = text, []

    def predict(self, batch, max_new_tokens):
        self.batches.append(len(batch))
        return [ex.references[0] if self.text is None else self.text for ex in batch]


class Progress:
    def __init__(self):
        self.events = []

    def stage(self, name, total):
        self.events.append(("stage", name, total))

    def advance(self, name, detail=""):
        self.events.append(("advance", name, detail))


def test_perfect_predictions_score_perfectly(suite_dir):
    examples = load_suite(suite_dir / "train.jsonl")
    progress, echo = Progress(), Echo()
    report = evaluate(echo, examples, batch=5, max_new_tokens=4, progress=progress, dataset="suite")
    assert echo.batches == [5] * (len(examples) // 5) + ([len(examples) % 5] if len(examples) % 5 else [])
    assert progress.events[0] == ("stage", "eval", len(examples)) and len(progress.events) == len(examples) + 1
    m = report.metrics
    assert m["caption"]["exact"] == 1.0 and m["caption"]["cider_d"] > 0
    for task in ("count_shape", "count_color", "color"):
        assert m[task]["vqa_accuracy"] == 1.0
    assert m["detect"] == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["segment"] == {"miou": 1.0, "ciou": 1.0}
    assert m["ocr"] == {"cer": 0.0, "exact": 1.0}
    assert sum(report.counts.values()) == len(examples)
    assert [p["prefix"] for p in report.predictions] == [e.prefix for e in examples]  # dataset order
    assert [p["prediction"] for p in report.predictions] == [e.references[0] for e in examples]
    summary = json.loads(report.to_json())
    assert summary["tasks"]["detect"]["primary"] == "accuracy" and summary["examples"] == len(examples)
    table = report.markdown()
    assert "| segment |" in table and "cer (lower is better)" in table


def test_wrong_predictions_score_zero_and_files_are_written(suite_dir, tmp_path):
    examples = load_suite(suite_dir / "train.jsonl")
    report = evaluate(Echo("zzz"), examples, batch=64, max_new_tokens=4)
    assert report.metrics["detect"]["accuracy"] == 0.0 and report.metrics["segment"]["miou"] == 0.0
    assert report.metrics["color"]["vqa_accuracy"] == 0.0 and report.metrics["ocr"]["cer"] > 0.5
    report.write_json(tmp_path / "m.json")
    report.write_predictions(tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == len(examples) and rows[0]["prediction"] == "zzz"
    assert json.loads((tmp_path / "m.json").read_text())["tasks"] == json.loads(report.to_json())["tasks"]


def test_refcoco_and_unknown_tasks(tmp_path):
    from PIL import Image

    image = tmp_path / "i.png"
    Image.new("RGB", (1023, 511)).save(image)
    ex = EvalExample(image, "detect the left box", ("the left box",), "refcoco", {"boxes": ((0, 0, 100, 50),)})
    hit = "<loc0000><loc0000><loc0100><loc0100> the left box"  # y1 = 100/1023 * 511 ~ 50 px, x1 = 100 px
    metrics, per = score_task("refcoco", [ex, ex], [hit, "<loc0500><loc0500><loc0600><loc0600> x"])
    assert metrics == {"accuracy@0.5": 0.5} and per == [1.0, 0.0]
    other = EvalExample(image, "translate", ("Hallo  Welt",), "translate")
    assert score_task("translate", [other], ["Hallo Welt"]) == ({"exact": 1.0}, [1.0])
    assert primary_metric("translate") == "exact" and primary_metric("count_color") == "vqa_accuracy"
    with pytest.raises(ValueError):
        evaluate(Echo(), [other], batch=0)
