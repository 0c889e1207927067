"""Targets fit the tiny model: suffix <= 48 tokens, prefix <= 12, every word one piece of the tiny vocabulary."""

from __future__ import annotations

import re

from pg2edge.tasks import SUITE_WORDS

MAX_SUFFIX_TOKENS = 48
MAX_PREFIX_TOKENS = 12
_SPECIAL = re.compile(r"<(loc|seg)[0-9]+>| ; ")  # tokens and the detection separator


def test_every_suite_word_is_one_piece(suite_tokenizer):
    from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer

    default = Tokenizer.from_bytes(build_synthetic_tokenizer(2048))
    for tok in (suite_tokenizer, default):  # the built-in list already holds them all
        for word in SUITE_WORDS:
            assert len(tok.encode("▁" + word)) == 1, word
            assert len(tok.encode(word)) == 1, word


def test_every_word_of_every_target_is_a_suite_word_or_a_number(images):
    for im in images:
        for t in im.targets:
            for word in _SPECIAL.sub(" ", f"{t.prefix} {t.suffix}").split():
                assert word in SUITE_WORDS or word.isdigit(), (word, t)


def test_prefix_and_suffix_token_budgets(images, suite_tokenizer):
    longest = {}
    for im in images:
        for t in im.targets:
            n_prefix, n_suffix = len(suite_tokenizer.encode(t.prefix)), len(suite_tokenizer.encode(t.suffix))
            assert n_prefix <= MAX_PREFIX_TOKENS, t
            assert n_suffix <= MAX_SUFFIX_TOKENS, t
            longest[t.task] = max(longest.get(t.task, 0), n_suffix)
    assert longest["segment"] >= 21  # 4 loc + 16 seg + label: the budget is really exercised


def test_worst_case_detection_fits(suite_tokenizer):
    """Four instances of the longest label: the most a detect target can hold."""
    from pg2edge.postprocess import format_detection
    from pg2edge.tasks.scene import MAX_SHAPES

    text = format_detection([(0.1, 0.2, 0.3, 0.4)] * MAX_SHAPES, ["purple hexagon"] * MAX_SHAPES)
    assert len(suite_tokenizer.encode(text)) <= MAX_SUFFIX_TOKENS
