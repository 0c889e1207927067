"""Mask IoU in image space: the reference scores 1 against itself; a shifted mask scores the hand-computed value."""

from __future__ import annotations

import numpy as np
import pytest

from pg2edge.eval.segmentation import mask_iou, text_mask
from pg2edge.tasks import generate_image

FULL = "".join(f"<seg{16 * 7 + k:03d}>" for k in range(16))  # every cell fully covered


def _locs(y0, x0, y1, x1) -> str:
    return "".join(f"<loc{v:04d}>" for v in (y0, x0, y1, x1))


def test_suite_targets_score_one_against_themselves():
    targets = [t for i in range(40) for t in generate_image(3, i, 112).targets if t.task == "segment"]
    assert len(targets) >= 5
    for t in targets:
        ref = text_mask(t.suffix, (112, 112))
        assert ref.any() and mask_iou(text_mask(t.suffix, (112, 112)), ref) == 1.0


def test_shifted_square_by_hand():
    size = (1023, 1023)  # loc v -> pixel v exactly
    ref = text_mask(_locs(100, 100, 300, 300) + FULL + " square", size)
    pred = text_mask(_locs(100, 200, 300, 400) + FULL + " square", size)
    assert ref.sum() == 200 * 200 and ref[100:300, 100:300].all()
    assert mask_iou(pred, ref) == pytest.approx(200 * 100 / (200 * 300))


def test_entries_without_codes_have_no_pixels_and_empty_masks_agree():
    size = (64, 48)
    assert not text_mask(_locs(0, 0, 1023, 1023) + " square", size).any()  # a box but no seg codes
    assert not text_mask("no objects here", size).any()
    empty = np.zeros((48, 64), bool)
    assert mask_iou(empty, empty) == 1.0
    halves = _locs(0, 0, 512, 1023) + FULL + " a ; " + _locs(512, 0, 1023, 1023) + FULL + " b"
    assert text_mask(halves, (64, 1023)).all()  # two entries are united
