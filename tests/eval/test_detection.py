"""IoU, greedy same-label matching and the dataset-level detection / referring accuracies on hand-made boxes."""

from __future__ import annotations

import pytest

from pg2edge.eval.detection import (DetectionCounts, box_iou, detection_counts, match_boxes, normalize_label,
                                    referring_hit)


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_matching_is_greedy_by_iou_one_to_one_and_per_label():
    gt = [("cat", (0, 0, 10, 10)), ("cat", (20, 0, 30, 10)), ("dog", (0, 20, 10, 30))]
    pred = [("cat", (1, 0, 11, 10)),   # IoU 9/11 with gt 0
            ("cat", (0, 0, 10, 10)),   # IoU 1 with gt 0: wins it
            ("Dog", (0, 21, 10, 31)),  # label match ignores case; IoU 9/11 with gt 2
            ("cat", (0, 20, 10, 30))]  # right place, wrong label: no match
    pairs = match_boxes(gt, pred)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 2)]
    assert pairs[1][2] == pytest.approx(9 / 11)
    counts = detection_counts(gt, pred)
    assert counts == DetectionCounts(matched=2, gt=3, pred=4, slots=4)
    m = counts.metrics()
    assert m["accuracy"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(0.5) and m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_threshold_is_inclusive_and_counts_add_up():
    # x-shift by a third of the width: IoU = (2/3) / (4/3) = 0.5 exactly
    assert len(match_boxes([("a", (0, 0, 3, 1))], [("a", (1, 0, 4, 1))])) == 1
    assert match_boxes([("a", (0, 0, 3, 1))], [("a", (1.01, 0, 4.01, 1))]) == []
    total = detection_counts([("a", (0, 0, 1, 1))], [("a", (0, 0, 1, 1))]) + detection_counts([("a", (0, 0, 1, 1))], [])
    assert total.metrics() == {"accuracy": 0.5, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert DetectionCounts().metrics()["accuracy"] == 0.0
    assert normalize_label("  Red   Circle ") == "red circle"


def test_referring_uses_the_first_box():
    gt = (10, 10, 20, 20)
    assert referring_hit(gt, [(10, 10, 20, 20), (0, 0, 1, 1)])
    assert not referring_hit(gt, [(0, 0, 1, 1), (10, 10, 20, 20)])
    assert not referring_hit(gt, [])
