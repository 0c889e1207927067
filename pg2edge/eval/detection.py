"""Box metrics at IoU >= 0.5: detection (greedy same-label matching) and referring expressions (first box).

Boxes are (x0, y0, x1, y1) in image pixels, as `postprocess.parse_objects`
returns them. Detection matches, per example, the (ground truth, prediction)
pairs of the same label with IoU >= 0.5 greedily in order of decreasing IoU (each
box used once). Over a dataset, with M matched pairs, G ground-truth and P
predicted boxes summed over examples:

- recall = M / G, precision = M / P, f1 their harmonic mean;
- accuracy = M / sum(max(g, p)) per example: 1 only when every object is found
  and nothing extra is emitted, and neither missing nor extra boxes can be traded
  for the other (an example with g = p = 0 adds nothing).

A referring expression names one object: it is correct when the first predicted
box has IoU >= 0.5 with the ground-truth box (RefCOCO's accuracy@0.5); no box is
a miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
IOU_THRESHOLD = 0.5


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def normalize_label(label: str) -> str:
    """Labels compare case- and whitespace-insensitively ("Red  Circle" == "red circle")."""
    return " ".join(label.lower().split())


def match_boxes(gt: Sequence[tuple[str, Box]], pred: Sequence[tuple[str, Box]],
                threshold: float = IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """Greedy one-to-one (gt index, pred index, IoU) pairs of equal label and IoU >= threshold, best first."""
    candidates = []
    for i, (gl, gb) in enumerate(gt):
        for j, (pl, pb) in enumerate(pred):
            if normalize_label(gl) == normalize_label(pl):
                iou = box_iou(gb, pb)
                if iou >= threshold:
                    candidates.append((-iou, i, j))
    used_gt: set[int] = set()
    used_pred: set[int] = set()
    pairs = []
    for neg_iou, i, j in sorted(candidates):
        if i not in used_gt and j not in used_pred:
            used_gt.add(i)
            used_pred.add(j)
            pairs.append((i, j, -neg_iou))
    return pairs


@dataclass(frozen=True)
class DetectionCounts:
    """Matched, ground-truth and predicted box counts, and the per-example accuracy denominator."""

    matched: int = 0
    gt: int = 0
    pred: int = 0
    slots: int = 0  # sum of max(#gt, #pred)

    def __add__(self, other: "DetectionCounts") -> "DetectionCounts":
        return DetectionCounts(self.matched + other.matched, self.gt + other.gt, self.pred + other.pred,
                               self.slots + other.slots)

    @property
    def accuracy(self) -> float:
        return self.matched / self.slots if self.slots else 0.0

    def metrics(self) -> dict[str, float]:
        """accuracy, precision, recall and f1 (0 where undefined)."""
        precision = self.matched / self.pred if self.pred else 0.0
        recall = self.matched / self.gt if self.gt else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"accuracy": self.accuracy, "precision": precision, "recall": recall, "f1": f1}


def detection_counts(gt: Sequence[tuple[str, Box]], pred: Sequence[tuple[str, Box]],
                     threshold: float = IOU_THRESHOLD) -> DetectionCounts:
    """One example's counts; sum them (`+`) over a dataset."""
    matched = len(match_boxes(gt, pred, threshold))
    return DetectionCounts(matched, len(gt), len(pred), max(len(gt), len(pred)))


def referring_hit(gt_box: Sequence[float], pred_boxes: Sequence[Sequence[float]],
                  threshold: float = IOU_THRESHOLD) -> bool:
    """Whether the first predicted box overlaps the referred object with IoU >= threshold."""
    return bool(pred_boxes) and box_iou(gt_box, pred_boxes[0]) >= threshold
