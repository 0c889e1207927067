"""How closely an artifact tracks the float JAX model: logit cosine, KL, top-1 and greedy agreement.

Logits are compared position by position along the *reference's* greedy path
(the artifact is teacher-forced with the JAX tokens, `Engine.score`), so one early
divergence does not make every later position incomparable. Greedy exact match is
measured separately, on the artifact's own free-running output.

A task-metric delta comes with a paired bootstrap interval (`paired_delta`):
when a third of the greedy captions change, a CIDEr-D delta on a few hundred
captions is noise of several points either way, and a report must say how
much of a delta its sample can resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-probabilities over the last axis, in float64."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [T, V] arrays: float64 [T]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(denom > 0, (a * b).sum(-1) / np.where(denom > 0, denom, 1.0), 1.0)


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Row-wise KL(p_ref || p) in nats: float64 [T]."""
    lp_ref, lp = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(lp_ref) * (lp_ref - lp)).sum(-1)


def paired_delta(ref_scores: Sequence[float], scores: Sequence[float], resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Mean per-example score change and its paired bootstrap interval: {"delta", "lo", "hi", "n"}.

    Examples are resampled with replacement and both models keep their own
    score on each, so the interval is that of the change, not of either
    metric. It is exact for mean-of-examples metrics (VQA accuracy, CIDEr-D
    with the references' IDF fixed, mIoU); for pooled ones (detection counts,
    CER's edits over characters) it is that of the per-example mean.
    """
    ref, new = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    if ref.shape != new.shape or ref.ndim != 1 or not len(ref):
        raise ValueError(f"paired_delta: {ref.shape} reference scores vs {new.shape} scores (need equal, non-empty)")
    diff = new - ref
    means = diff[np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return {"delta": float(diff.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(diff))}


@dataclass
class ParityTally:
    """Running sums over prompts; `summary()` gives the figures parity.json reports."""

    cosines: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)

    def add(self, ref_logits: np.ndarray, logits: np.ndarray, ref_tokens: Sequence[int],
            tokens: Sequence[int]) -> None:
        """One prompt: teacher-forced logits [T, V] against the reference's, and both greedy streams."""
        ref_logits, logits = np.asarray(ref_logits), np.asarray(logits)
        if ref_logits.shape != logits.shape:
            raise ValueError(f"logits: reference {ref_logits.shape} vs artifact {logits.shape}")
        self.cosines += cosine(ref_logits, logits).tolist()
        self.kls += kl_divergence(ref_logits, logits).tolist()
        self.top1 += (ref_logits.argmax(-1) == logits.argmax(-1)).tolist()
        self.exact.append(list(ref_tokens) == list(tokens))

    def summary(self) -> dict:
        """mean/min cosine, mean KL, top-1 agreement over positions, greedy exact match over prompts."""
        if not self.exact:
            raise ValueError("no prompts were compared")
        return {"positions": len(self.top1), "prompts": len(self.exact),
                "cosine_mean": float(np.mean(self.cosines)), "cosine_min": float(np.min(self.cosines)),
                "kl": float(np.mean(self.kls)), "top1_agreement": float(np.mean(self.top1)),
                "greedy_exact_match": float(np.mean(self.exact))}
