"""Parity figures: identical logits are perfect, and each figure matches a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pg2edge.eval.parity import ParityTally, cosine, kl_divergence, log_softmax


def test_identical_logits_are_perfect_agreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5, 40)).astype(np.float32)
    tally = ParityTally()
    tally.add(ref, ref.copy(), [1, 2, 3], [1, 2, 3])
    s = tally.summary()
    assert s["cosine_min"] == pytest.approx(1.0) and s["kl"] == pytest.approx(0.0, abs=1e-12)
    assert s["top1_agreement"] == 1.0 and s["greedy_exact_match"] == 1.0 and s["positions"] == 5


def test_kl_and_cosine_match_hand_computation():
    ref, other = np.array([[0.0, math.log(3.0)]]), np.array([[0.0, 0.0]])  # p = (1/4, 3/4), q = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_divergence(ref, other)[0] == pytest.approx(expected, rel=1e-12)
    assert np.exp(log_softmax(ref)).sum() == pytest.approx(1.0)
    assert cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))[0] == pytest.approx(1 / math.sqrt(2))


def test_top1_counts_positions_and_exact_match_counts_prompts():
    tally = ParityTally()
    ref = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    art = np.array([[0.0, 1.5], [0.0, 2.0], [0.0, 1.0]])  # the middle position flips
    tally.add(ref, art, [1, 0, 1], [1, 1, 1])
    tally.add(ref[:1], art[:1], [1], [1])
    s = tally.summary()
    assert s["top1_agreement"] == pytest.approx(3 / 4) and s["greedy_exact_match"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="reference"):
        tally.add(ref, art[:2], [1], [1])
