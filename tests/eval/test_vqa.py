"""VQA normalization and the official 10-annotator (leave-one-out) accuracy."""

from __future__ import annotations

import pytest

from pg2edge.eval.vqa import normalize_answer, vqa_accuracy


@pytest.mark.parametrize("raw, normal", [
    ("Two", "2"), ("two dogs.", "2 dogs"), ("The red one", "red 1"), ("an apple", "apple"),
    ("dont know", "don't know"), ("Yes!", "yes"), ("none", "0"), ("10,000", "10000"), ("3.5", "3.5"),
    ("black-and-white", "black and white"), ("left / right", "left right"), ("  hi\tthere\n", "hi there"),
    ("isnt it", "isn't it"),
])
def test_normalization(raw, normal):
    assert normalize_answer(raw) == normal


def test_ten_annotators_leave_one_out():
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("3", answers) == pytest.approx(1.0)
    # held-out "2": 2 others agree -> 2/3; held-out "3": 3 others agree -> 1.  (3 * 2/3 + 7 * 1) / 10
    assert vqa_accuracy("two", answers) == pytest.approx(0.9)
    assert vqa_accuracy("4", answers) == 0.0
    one = ["cat"] + ["dog"] * 9
    assert vqa_accuracy("Cat.", one) == pytest.approx(9 * (1 / 3) / 10)


def test_unanimous_humans_are_compared_case_insensitively_only_as_the_official_code_does():
    assert vqa_accuracy("YES", ["yes"] * 10) == 1.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0  # the official code normalizes only when humans disagree


def test_single_reference_is_exact_match_after_normalizing_both():
    assert vqa_accuracy("two", ["2"]) == 1.0
    assert vqa_accuracy("the blue", ["blue"]) == 1.0
    assert vqa_accuracy("red", ["blue"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
