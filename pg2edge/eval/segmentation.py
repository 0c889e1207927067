"""Segmentation IoU in image space: `<loc>` box + 16 `<seg>` codes -> a pasted mask, compared pixel by pixel.

Both the prediction and the reference text go through the same path the runtime
uses (`postprocess.parse_objects` then `attach_masks`), decoded by the suite's
stand-in decoder (`tasks.segcodes.decode_codes`), so a prediction equal to the
target scores exactly 1. An entry without a full set of 16 codes contributes
no pixels; several entries are united. Reported: mIoU, the mean of per-example
IoU, and cIoU (total intersection / total union), as big_vision's RefCOCO
segmentation evaluator does. Two empty masks have IoU 1 (nothing to find, nothing found).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pg2edge.postprocess import attach_masks, parse_objects
from pg2edge.tasks.segcodes import decode_codes

MaskDecoder = Callable[[np.ndarray], np.ndarray]  # int32 [N, 16] -> [N, 64, 64] in [-1, 1]


def text_mask(text: str, image_size: tuple[int, int], decode_fn: MaskDecoder = decode_codes) -> np.ndarray:
    """Union of every segmented entry's mask in `text`: bool [height, width] of the original image."""
    width, height = image_size
    out = np.zeros((height, width), dtype=bool)
    for obj in attach_masks(parse_objects(text, image_size), decode_fn, image_size):
        if obj.mask is not None:
            out |= obj.mask
    return out


def intersection_union(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    """Pixel counts of the intersection and union of two same-shape bool masks."""
    if pred.shape != ref.shape:
        raise ValueError(f"masks: shapes {pred.shape} and {ref.shape} differ")
    return int(np.logical_and(pred, ref).sum()), int(np.logical_or(pred, ref).sum())


def mask_iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty."""
    inter, union = intersection_union(pred, ref)
    return inter / union if union else 1.0
