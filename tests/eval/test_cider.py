"""CIDEr-D equals pycocoevalcap's scorer on a fixed sample (after the same tokenization)."""

from __future__ import annotations

import random

import pytest

from pg2edge.eval.cider import cider_d, ngram_counts, tokenize_caption

WORDS = "a the red blue green big small circle square star and on left of two three shapes".split()


def _sample(seed: int = 0, n: int = 40) -> tuple[list[str], list[list[str]]]:
    """Random captions with repeated n-grams, 1..5 references, an empty candidate and a one-word one."""
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))

    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(n)]
    cands = [sentence() for _ in range(n)]
    cands[3], cands[7] = "", "circle"
    cands[5] = refs[5][0]
    return cands, refs


def test_matches_pycocoevalcap_on_a_fixed_sample():
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    cands, refs = _sample()
    ours, per = cider_d(cands, refs)
    theirs, their_per = Cider().compute_score({i: r for i, r in enumerate(refs)},
                                              {i: [c] for i, c in enumerate(cands)})
    assert ours == pytest.approx(float(theirs), rel=1e-12, abs=1e-12)
    assert per == pytest.approx([float(s) for s in their_per], rel=1e-9, abs=1e-12)
    assert ours > 0


def test_matches_pycocoevalcap_on_tokenized_real_looking_captions():
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    raw_refs = [["A man riding a horse on a beach.", "Someone rides a brown horse, near the sea!"],
                ["Two dogs play with a frisbee.", "two dogs playing in the park", "Dogs & a frisbee"],
                ["A plate of food (pasta) on a table.", "Pasta on a white plate."]]
    raw_cands = ["a man rides a horse on the beach", "Two dogs; playing.", "a plate with pasta"]
    refs = [[tokenize_caption(r) for r in rs] for rs in raw_refs]
    cands = [tokenize_caption(c) for c in raw_cands]
    theirs, _ = Cider().compute_score(dict(enumerate(refs)), {i: [c] for i, c in enumerate(cands)})
    assert cider_d(cands, refs)[0] == pytest.approx(float(theirs), rel=1e-12)


def test_tokenization_and_ngrams():
    assert tokenize_caption("  A Man, riding a horse.\n(On the beach!) don't ") == "a man riding a horse on the beach don't"
    assert ngram_counts("a b a b")[("a", "b")] == 2 and len(ngram_counts("a b c d e")) == 5 + 4 + 3 + 2


def test_edge_cases():
    assert cider_d([], []) == (0.0, [])
    assert cider_d(["a cat"], [["a cat"]]) == (0.0, [0.0])  # one image: every idf is log(1) - log(1) = 0
    with pytest.raises(ValueError, match="2 candidates but 1"):
        cider_d(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        cider_d(["a"], [[]])
