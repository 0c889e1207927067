"""CIDEr-D for captions, reproducing pycocoevalcap's `Cider().compute_score` number for number.

pycocoevalcap (coco-caption) is the reference: n-grams 1..4, tf-idf vectors
whose document frequency comes from the references of the evaluated set
(`idf = log(#images) - log(max(1, df))`), a clipped cosine per n (the hypothesis
weight is clipped at the reference's), a Gaussian length penalty with sigma 6,
the mean over n and over references, times 10. Two of its quirks are kept on
purpose so numbers stay comparable with published ones: the "length" in the
penalty counts bigrams (words - 1, floored at 0), and an image whose vectors have
zero norm scores 0. coco-caption tokenizes with the Java PTB tokenizer first;
here `tokenize_caption` (lowercase, punctuation to spaces) stands in for it and
is applied to hypotheses and references alike. Pure python + math: no numpy or jax.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

N = 4
SIGMA = 6.0
_PUNCT = re.compile(r"[^\w\s']|_")

NgramCounts = Counter  # Counter[tuple[str, ...], int]


def tokenize_caption(text: str) -> str:
    """Lowercase, punctuation (except apostrophes) to spaces, whitespace collapsed: a PTB stand-in."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def ngram_counts(sentence: str, n: int = N) -> NgramCounts:
    """Counts of every 1..n-gram of the whitespace-split sentence (coco-caption's `precook`)."""
    words = sentence.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _document_frequency(refs_per_image: Sequence[Sequence[NgramCounts]]) -> Counter:
    """In how many images' reference sets each n-gram occurs."""
    df: Counter = Counter()
    for refs in refs_per_image:
        df.update({gram for ref in refs for gram in ref})
    return df


def _vector(counts: NgramCounts, df: Counter, log_images: float, n: int) -> tuple[list[dict], list[float], int]:
    """tf-idf weights per n-gram order, their norms, and the bigram count used as length."""
    vec: list[dict] = [{} for _ in range(n)]
    sq = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        w = float(tf) * (log_images - math.log(max(1.0, float(df[gram]))))
        vec[k][gram] = w
        sq[k] += w * w
        if k == 1:
            length += tf
    return vec, [math.sqrt(s) for s in sq], length


def _similarity(hyp: tuple, ref: tuple, n: int, sigma: float) -> list[float]:
    """Clipped cosine per n-gram order times the Gaussian length penalty (CIDEr-D's `sim`)."""
    (vh, nh, lh), (vr, nr, lr) = hyp, ref
    penalty = math.e ** (-(float(lh - lr) ** 2) / (2 * sigma ** 2))
    out = []
    for k in range(n):
        val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
        if nh[k] != 0 and nr[k] != 0:
            val /= nh[k] * nr[k]
        out.append(val * penalty)
    return out


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = N,
            sigma: float = SIGMA) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-image scores of already-tokenized captions (one candidate per image)."""
    if len(candidates) != len(references):
        raise ValueError(f"cider_d: {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        return 0.0, []
    if any(len(refs) == 0 for refs in references):
        raise ValueError("cider_d: every image needs at least one reference caption")
    cooked_refs = [[ngram_counts(r, n) for r in refs] for refs in references]
    df = _document_frequency(cooked_refs)
    log_images = math.log(float(len(candidates)))
    scores = []
    for cand, refs in zip(candidates, cooked_refs):
        hyp = _vector(ngram_counts(cand, n), df, log_images, n)
        total = [0.0] * n
        for ref in refs:
            for k, v in enumerate(_similarity(hyp, _vector(ref, df, log_images, n), n, sigma)):
                total[k] += v
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores
