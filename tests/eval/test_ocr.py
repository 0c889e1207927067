"""CER: Levenshtein edits over reference characters, summed over the corpus."""

from __future__ import annotations

import pytest

from pg2edge.eval.ocr import cer, char_edits, levenshtein


@pytest.mark.parametrize("a, b, d", [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("flaw", "lawn", 2),
                                     ("same", "same", 0), ("ab", "ba", 2)])
def test_levenshtein(a, b, d):
    assert levenshtein(a, b) == d == levenshtein(b, a)


def test_corpus_cer_weights_by_reference_length():
    # 1 edit / 3 chars and 2 edits / 3 chars -> 3 / 6, and an exact match adds only characters
    assert cer(["abc", "x"], ["abd", "xyz"]) == pytest.approx(0.5)
    assert cer(["abc", "x", "hello"], ["abd", "xyz", "hello"]) == pytest.approx(3 / 11)
    assert char_edits("a   b ", "a b") == (0, 3)
    assert cer([], []) == 0.0 and cer(["x"], [""]) == 1.0
