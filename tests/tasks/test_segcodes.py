"""The stand-in mask encoder: exact 4x4 coverage, codes 16*level+cell, and a decoder `attach_masks` accepts."""

from __future__ import annotations

import numpy as np
import pytest

from pg2edge.postprocess import attach_masks, parse_objects
from pg2edge.tasks import decode_codes, encode_mask
from pg2edge.tasks.geometry import rasterize, tight_box
from pg2edge.tasks.segcodes import code_levels, coverage_grid


def test_full_and_empty_masks():
    assert encode_mask(np.ones((9, 13), bool)) == tuple(16 * 7 + k for k in range(16))
    half = np.zeros((8, 8), bool)
    half[:, :4] = True  # left half: cells in columns 0-1 full, 2-3 empty
    assert encode_mask(half) == tuple(16 * (7 if k % 4 < 2 else 0) + k for k in range(16))


def test_coverage_is_exact_for_boxes_not_divisible_by_4():
    m = np.zeros((3, 5), bool)
    m[0, 0] = True  # cells are 3/4 x 5/4 px (h x w): the pixel covers 0.75 x 1 of cell (0, 0), 0.25 x 1 of (1, 0)
    grid = coverage_grid(m)
    assert grid.sum() * (3 * 5 / 16) == pytest.approx(1.0)  # total covered area = 1 pixel
    assert grid[0, 0] == pytest.approx(0.8) and grid[1, 0] == pytest.approx(0.25 / (0.75 * 1.25))
    assert grid[0, 1] == 0.0


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star", "hexagon", "diamond"])
def test_codes_are_in_range_one_per_cell_and_decode_close_to_the_mask(shape):
    raster = rasterize(shape, 50.3, 40.7, 20.0)
    top, left, bottom, right = tight_box(raster)
    crop = raster.mask[top - raster.top:bottom - raster.top, left - raster.left:right - raster.left]
    codes = encode_mask(crop)
    assert len(codes) == 16 and all(0 <= c < 128 and c % 16 == k for k, c in enumerate(codes))
    decoded = decode_codes(np.asarray([codes]))
    assert decoded.shape == (1, 64, 64) and decoded.dtype == np.float32
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0
    # Through the real postprocessing path: parse, decode, paste into the box, compare with the drawn mask.
    from pg2edge.postprocess import format_detection

    size = 100
    text = format_detection([(top / size, left / size, bottom / size, right / size)], [shape], [codes])
    (obj,) = attach_masks(parse_objects(text, (size, size)), decode_codes, (size, size))
    truth = np.zeros((size, size), bool)
    truth[top:bottom, left:right] = crop
    iou = (obj.mask & truth).sum() / (obj.mask | truth).sum()
    assert iou > (0.55 if shape == "star" else 0.75), iou  # 4x4 cells cannot hold a star's points


def test_decoder_refuses_bad_codes():
    with pytest.raises(ValueError, match=r"\[N, 16\]"):
        decode_codes(np.zeros((2, 15), int))
    with pytest.raises(ValueError, match="values"):
        code_levels(np.full((1, 16), 128))
