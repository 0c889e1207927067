"""Which metric each task gets, and scoring one task's predictions against its examples' references.

caption -> CIDEr-D (+ exact match); vqa and the suite's count_shape / count_color
/ color -> VQA accuracy; detect -> detection accuracy at IoU >= 0.5 (+ precision,
recall, f1); refcoco -> accuracy@0.5 of the first box; segment -> mIoU (+ cIoU);
ocr -> CER (+ exact match); any other task -> exact match after whitespace
normalization. Box and mask metrics work in the original image's pixels, like
the runtime's parsed output.
"""

from __future__ import annotations

from collections.abc import Sequence

from pg2edge.eval.cider import cider_d, tokenize_caption
from pg2edge.eval.example import EvalExample
from pg2edge.eval.detection import DetectionCounts, detection_counts, referring_hit
from pg2edge.eval.ocr import char_edits, normalize_text
from pg2edge.eval.segmentation import intersection_union, text_mask
from pg2edge.eval.vqa import vqa_accuracy
from pg2edge.postprocess import parse_objects
from pg2edge.preprocess import original_size

METRIC_OF_TASK = {"caption": "cider", "vqa": "vqa", "count_shape": "vqa", "count_color": "vqa", "color": "vqa",
                  "detect": "detection", "refcoco": "refer", "segment": "segmentation", "ocr": "cer"}
PRIMARY = {"cider": "cider_d", "vqa": "vqa_accuracy", "detection": "accuracy", "refer": "accuracy@0.5",
           "segmentation": "miou", "cer": "cer", "exact": "exact"}
LOWER_IS_BETTER = frozenset({"cer"})

Scored = tuple[dict[str, float], list[float]]  # metrics, per-example score of the primary metric


def metric_kind(task: str) -> str:
    """The metric family of a task; unknown tasks are scored by exact match."""
    return METRIC_OF_TASK.get(task, "exact")


def primary_metric(task: str) -> str:
    """The headline metric's name for a task (the one the report table leads with)."""
    return PRIMARY[metric_kind(task)]


def _captions(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    cands = [tokenize_caption(p) for p in preds]
    refs = [[tokenize_caption(r) for r in ex.references] for ex in examples]
    corpus, per = cider_d(cands, refs)
    exact = [float(c in r) for c, r in zip(cands, refs)]
    return {"cider_d": corpus, "exact": sum(exact) / len(exact)}, per


def _vqa(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    per = [vqa_accuracy(p, ex.references) for ex, p in zip(examples, preds)]
    return {"vqa_accuracy": sum(per) / len(per)}, per


def _gt_objects(ex: EvalExample, size: tuple[int, int]) -> list[tuple[str, tuple]]:
    """Ground-truth (label, pixel box) pairs: loader boxes in `meta`, else the parsed reference text."""
    if "boxes" in ex.meta:
        labels = ex.meta.get("labels") or [""] * len(ex.meta["boxes"])
        return [(str(lab), tuple(box)) for lab, box in zip(labels, ex.meta["boxes"])]
    return [(o.label, o.box) for o in parse_objects(ex.references[0], size)]


def _detection(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    total, per = DetectionCounts(), []
    for ex, p in zip(examples, preds):
        size = original_size(ex.image)
        counts = detection_counts(_gt_objects(ex, size), [(o.label, o.box) for o in parse_objects(p, size)])
        total += counts
        per.append(counts.accuracy)
    return total.metrics(), per


def _refer(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    per = []
    for ex, p in zip(examples, preds):
        size = original_size(ex.image)
        (_, gt_box), *_ = _gt_objects(ex, size)
        per.append(float(referring_hit(gt_box, [o.box for o in parse_objects(p, size)])))
    return {"accuracy@0.5": sum(per) / len(per)}, per


def _segmentation(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    per, inter_total, union_total = [], 0, 0
    for ex, p in zip(examples, preds):
        size = original_size(ex.image)
        inter, union = intersection_union(text_mask(p, size), text_mask(ex.references[0], size))
        inter_total, union_total = inter_total + inter, union_total + union
        per.append(inter / union if union else 1.0)
    return {"miou": sum(per) / len(per), "ciou": inter_total / union_total if union_total else 1.0}, per


def _ocr(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    edits, chars, per = 0, 0, []
    for ex, p in zip(examples, preds):
        e, n = char_edits(p, ex.references[0])
        edits, chars = edits + e, chars + n
        per.append(e / n if n else float(e > 0))
    exact = sum(1 for ex, p in zip(examples, preds) if normalize_text(p) == normalize_text(ex.references[0]))
    return {"cer": edits / chars if chars else float(edits > 0), "exact": exact / len(preds)}, per


def _exact(examples: Sequence[EvalExample], preds: Sequence[str]) -> Scored:
    per = [float(normalize_text(p) in {normalize_text(r) for r in ex.references}) for ex, p in zip(examples, preds)]
    return {"exact": sum(per) / len(per)}, per


_SCORERS = {"cider": _captions, "vqa": _vqa, "detection": _detection, "refer": _refer,
            "segmentation": _segmentation, "cer": _ocr, "exact": _exact}


def score_task(task: str, examples: Sequence[EvalExample], predictions: Sequence[str]) -> Scored:
    """Metrics of one task over its examples, and each example's primary-metric score."""
    if len(examples) != len(predictions):
        raise ValueError(f"score_task: {len(examples)} examples but {len(predictions)} predictions")
    if not examples:
        return {}, []
    return _SCORERS[metric_kind(task)](examples, predictions)
