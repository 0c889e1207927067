"""The tower's glyph term: labels from OCR texts, and a CTC loss equal to a brute-force sum over alignments."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from pg2edge.train.glyph_ctc import (BLANK, FRAMES_PER_TOKEN, HEAD_FILE, glyph_frames, glyph_labels, glyph_loss,
                                     greedy_read, read_head, write_head)


def test_labels_are_the_texts_characters_right_padded_over_a_charset_of_all_of_them():
    g = glyph_labels(["ab 1", None, "ba"])
    assert g.charset == " 1ab" and g.classes == 5
    np.testing.assert_array_equal(g.labels, [[3, 4, 1, 2], [0, 0, 0, 0], [4, 3, 0, 0]])
    np.testing.assert_array_equal(g.paddings, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(g.has_text, [1, 0, 1])


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    """CTC's many-to-one map: merge repeats, then drop blanks."""
    return tuple(k for k, _ in itertools.groupby(path) if k != BLANK)


def test_the_loss_is_minus_log_the_summed_probability_of_every_alignment_per_character():
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.normal(size=(2, 2, 4)), jnp.float32)  # 2 images, 2 tokens -> 4 frames each
    head = jnp.asarray(rng.normal(size=(4, FRAMES_PER_TOKEN * 3)), jnp.float32)  # blank + 2 characters
    g = glyph_labels(["aa", "b"])  # "aa" needs a blank between its letters: only 2 frames per token allow it
    loss = glyph_loss(tokens, head, jnp.asarray(g.labels), jnp.asarray(g.paddings), jnp.asarray(g.has_text))
    frames = (np.asarray(tokens, np.float64) @ np.asarray(head, np.float64)).reshape(2, 4, 3)
    logp = frames - np.log(np.exp(frames).sum(-1, keepdims=True))
    nll = []
    for b, target in enumerate([(1, 1), (2,)]):
        total = sum(np.exp(sum(logp[b, t, k] for t, k in enumerate(path)))
                    for path in itertools.product(range(3), repeat=4) if _collapse(path) == target)
        nll.append(-np.log(total))
    np.testing.assert_allclose(loss, sum(nll) / 3, rtol=1e-4)  # 3 characters in the batch
    none = glyph_labels([None, None])
    assert float(glyph_loss(tokens, head, jnp.asarray(none.labels), jnp.asarray(none.paddings),
                            jnp.asarray(none.has_text))) == 0.0


def test_the_best_path_merges_repeats_then_drops_blanks_so_a_doubled_letter_needs_a_blank_between():
    charset = " ab"
    paths = [[0, 2, 2, 0, 2, 3, 3, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 3, 3, 1, 1, 2, 2, 2]]
    frames = np.eye(4)[paths]  # one-hot logits: the path is each frame's top class
    assert greedy_read(frames, charset) == ["aab ", "", "b a"]


def test_frames_are_each_tokens_frames_in_raster_order():
    rng = np.random.default_rng(1)
    tokens, head = rng.normal(size=(1, 3, 4)), rng.normal(size=(4, FRAMES_PER_TOKEN * 5))
    frames = np.asarray(glyph_frames(jnp.asarray(tokens), jnp.asarray(head)))
    np.testing.assert_allclose(frames[0, 2:4].reshape(-1), tokens[0, 1] @ head, rtol=1e-5)


def test_the_kept_head_round_trips_and_a_head_that_does_not_fit_its_charset_is_refused(tmp_path):
    head = np.arange(4 * FRAMES_PER_TOKEN * 4, dtype=np.float32).reshape(4, -1)
    write_head(tmp_path, head, " 1é")
    got, charset = read_head(tmp_path)
    np.testing.assert_array_equal(got, head)
    assert charset == " 1é"
    np.savez(tmp_path / HEAD_FILE, head=head[:, :-1], charset=np.array([32], np.int32))
    with pytest.raises(ValueError, match=f"{HEAD_FILE}: head .* does not fit a charset of 1 characters"):
        read_head(tmp_path)
    np.savez(tmp_path / HEAD_FILE, head=head)
    with pytest.raises(ValueError, match=f"{HEAD_FILE}: expected arrays 'head' and 'charset', found \\['head'\\]"):
        read_head(tmp_path)
