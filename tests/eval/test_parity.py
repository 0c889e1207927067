"""Parity figures: identical logits are perfect, and each figure matches a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pg2edge.eval.parity import ParityTally, cosine, kl_divergence, log_softmax, paired_delta


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


def test_paired_delta_of_identical_scores_is_exactly_zero():
    scores = np.random.default_rng(0).uniform(0, 3, 200)
    assert paired_delta(scores, scores.copy()) == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "n": 200}


def test_paired_delta_interval_covers_the_change_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small_ref = rng.uniform(0, 1, 100)
    small = paired_delta(small_ref, small_ref + 0.05 + rng.normal(0, 0.3, 100))
    big_ref = rng.uniform(0, 1, 2500)
    big = paired_delta(big_ref, big_ref + 0.05 + rng.normal(0, 0.3, 2500))
    for ci in (small, big):
        assert ci["lo"] < 0.05 < ci["hi"] and ci["lo"] <= ci["delta"] <= ci["hi"]
    assert (big["hi"] - big["lo"]) < 0.3 * (small["hi"] - small["lo"])  # ~ 1 / sqrt(25)
    # The interval is of the paired change: a large shared per-example spread does not widen it.
    shared = rng.normal(0, 10, 2500)
    assert paired_delta(big_ref + shared, big_ref + shared + 0.05)["hi"] - 0.05 < 1e-12


def test_paired_delta_rejects_unpaired_scores():
    with pytest.raises(ValueError, match=r"\(3,\) reference scores vs \(2,\) scores"):
        paired_delta([1.0, 2.0, 3.0], [1.0, 2.0])
