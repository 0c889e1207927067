"""`evaluate`: run a predictor over examples in batches, score every task, and keep what it said.

Examples are batched in order of prompt length (so a JAX batch pads little and
reuses compiled shapes) and the predictions are put back in dataset order. The
report holds per-task metrics, counts, every prediction with its per-example
score, and the wall time; `to_json` / `markdown` render it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pg2edge.eval.example import EvalExample
from pg2edge.eval.predictors import Predictor
from pg2edge.tasks.errors import DataError
from pg2edge.eval.scoring import LOWER_IS_BETTER, primary_metric, score_task
from pg2edge.progress import Progress

STAGE = "eval"


@dataclass
class EvalReport:
    """Per-task metrics and counts, every prediction, and how long it took."""

    target: str
    dataset: str
    metrics: dict[str, dict[str, float]]  # task -> metric name -> value
    counts: dict[str, int]  # task -> examples
    primary: dict[str, str]  # task -> headline metric name
    predictions: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    max_new_tokens: int = 0

    def to_dict(self, predictions: bool = False) -> dict:
        """JSON-ready summary; `predictions=True` adds every example's prediction and score."""
        out = {"target": self.target, "dataset": self.dataset, "max_new_tokens": self.max_new_tokens,
               "seconds": round(self.seconds, 3), "examples": sum(self.counts.values()),
               "tasks": {task: {"n": self.counts[task], "primary": self.primary[task], **self.metrics[task]}
                         for task in self.metrics}}
        if predictions:
            out["predictions"] = self.predictions
        return out

    def to_json(self, predictions: bool = False) -> str:
        """`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(predictions), indent=2, sort_keys=False)

    def write_json(self, path: str | Path) -> None:
        """The summary (`to_json`) to a file; an unwritable path is one DataError line."""
        _write(Path(path), self.to_json() + "\n")

    def write_predictions(self, path: str | Path) -> None:
        """One JSON line per example: prediction, references, score and loader facts."""
        _write(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.predictions))

    def rows(self) -> list[tuple[str, int, str, float, str]]:
        """(task, n, headline metric, value, other metrics) per task, for tables."""
        out = []
        for task, values in self.metrics.items():
            name = self.primary[task]
            others = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if k != name)
            out.append((task, self.counts[task], name, values[name], others))
        return out

    def markdown(self) -> str:
        """A markdown table: one row per task, headline metric first (lower is better for cer)."""
        lines = [f"`{self.target}` on `{self.dataset}` ({sum(self.counts.values())} examples, "
                 f"{self.seconds:.1f} s)", "", "| task | n | metric | value | other |", "|---|---:|---|---:|---|"]
        for task, n, name, value, others in self.rows():
            arrow = " (lower is better)" if name in LOWER_IS_BETTER else ""
            lines.append(f"| {task} | {n} | {name}{arrow} | {value:.4f} | {others} |")
        return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot write ({e.strerror or e})") from None


def _prediction_row(index: int, ex: EvalExample, text: str, score: float) -> dict:
    return {"index": index, "image": str(ex.image), "task": ex.task, "prefix": ex.prefix, "prediction": text,
            "references": list(ex.references), "score": score, "meta": ex.meta}


def predict_all(predictor: Predictor, examples: Sequence[EvalExample], batch: int, max_new_tokens: int,
                progress: Progress | None = None) -> list[str]:
    """Every example's generated text, in dataset order, batched by prompt length."""
    if batch < 1:
        raise ValueError(f"batch: expected >= 1, found {batch}")
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prefix))
    texts: list[str | None] = [None] * len(examples)
    if progress is not None:
        progress.stage(STAGE, len(examples))
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        outputs = predictor.predict([examples[i] for i in idx], max_new_tokens)
        if len(outputs) != len(idx):
            raise ValueError(f"{predictor.name}: {len(outputs)} predictions for a batch of {len(idx)}")
        for i, text in zip(idx, outputs):
            texts[i] = text
            if progress is not None:
                progress.advance(STAGE, examples[i].task)
    return [t if t is not None else "" for t in texts]


def score_all(examples: Sequence[EvalExample], texts: Sequence[str]) -> tuple[dict, dict, dict, list[float]]:
    """Per-task metrics, counts and headline names, and each example's score (dataset order)."""
    by_task: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.task, []).append(i)
    metrics, counts, primary = {}, {}, {}
    scores = [0.0] * len(examples)
    for task, idx in by_task.items():
        values, per = score_task(task, [examples[i] for i in idx], [texts[i] for i in idx])
        metrics[task], counts[task], primary[task] = values, len(idx), primary_metric(task)
        for i, s in zip(idx, per):
            scores[i] = s
    return metrics, counts, primary, scores


def evaluate(predictor: Predictor, examples: Sequence[EvalExample], batch: int = 8, max_new_tokens: int = 64,
             progress: Progress | None = None, dataset: str = "") -> EvalReport:
    """Generate for every example, score each task, and report metrics with every prediction."""
    t0 = time.perf_counter()
    texts = predict_all(predictor, examples, batch, max_new_tokens, progress)
    metrics, counts, primary, scores = score_all(examples, texts)
    rows = [_prediction_row(i, ex, t, s) for i, (ex, t, s) in enumerate(zip(examples, texts, scores))]
    return EvalReport(target=predictor.name, dataset=dataset, metrics=metrics, counts=counts, primary=primary,
                      predictions=rows, seconds=time.perf_counter() - t0, max_new_tokens=max_new_tokens)
