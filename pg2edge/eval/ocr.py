"""Character error rate: Levenshtein edits between prediction and reference over reference characters.

Aggregated as total edits / total reference characters (long texts weigh more,
as in ASR/OCR corpora), not as a mean of per-example rates. Texts are compared
as given, after collapsing runs of whitespace, so "a  b" and "a b" are equal.
"""

from __future__ import annotations


def levenshtein(a: str, b: str) -> int:
    """Minimum insertions + deletions + substitutions turning `a` into `b` (two-row DP)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalize_text(text: str) -> str:
    """Whitespace runs collapsed and the ends stripped; case and punctuation are kept."""
    return " ".join(text.split())


def char_edits(prediction: str, reference: str) -> tuple[int, int]:
    """(edits, reference length) of one example, after whitespace normalization."""
    pred, ref = normalize_text(prediction), normalize_text(reference)
    return levenshtein(pred, ref), len(ref)


def cer(predictions: list[str], references: list[str]) -> float:
    """Corpus CER: sum of edits / sum of reference lengths (all-empty references: 0 if matched, else 1)."""
    if len(predictions) != len(references):
        raise ValueError(f"cer: {len(predictions)} predictions but {len(references)} references")
    edits = total = 0
    for p, r in zip(predictions, references):
        e, n = char_edits(p, r)
        edits += e
        total += n
    return edits / total if total else float(edits > 0)
