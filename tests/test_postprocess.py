"""<loc>/<seg> parsing: exact known outputs, pixel mapping, robustness to any text, round trips, masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg2edge.postprocess import (LOC_DENOMINATOR, DetectedObject, attach_masks, format_detection, ids_to_text,
                                 parse_objects, parse_token_ids, paste_mask)

SEG16 = "".join(f"<seg{c:03d}>" for c in range(0, 128, 8))
CODES16 = tuple(range(0, 128, 8))


def _loc(*values: int) -> str:
    return "".join(f"<loc{v:04d}>" for v in values)


# -- exact parsing ---------------------------------------------------------------------------------

def test_single_detection_maps_to_original_pixels():
    (obj,) = parse_objects(_loc(0, 1023, 1023, 0) + " cat", (640, 480))
    # y0=0, x0=1023 > x1=0: swapped so x0 <= x1
    assert obj == DetectedObject("cat", (0.0, 0.0, 640.0, 480.0), (0.0, 0.0, 1.0, 1.0), None)


def test_several_detections_with_separators_and_label_with_spaces():
    text = _loc(102, 205, 307, 409) + " red car ; " + _loc(0, 0, 511, 1023) + " traffic  light"
    a, b = parse_objects(text, (1000, 500))
    assert a.label == "red car" and b.label == "traffic light"
    assert a.box_norm == pytest.approx((102 / 1023, 205 / 1023, 307 / 1023, 409 / 1023))
    assert a.box == pytest.approx((205 / 1023 * 1000, 102 / 1023 * 500, 409 / 1023 * 1000, 307 / 1023 * 500))
    assert b.box == pytest.approx((0.0, 0.0, 1000.0, 511 / 1023 * 500))
    assert a.seg_codes is None and b.seg_codes is None


def test_segmentation_entry_has_16_codes():
    (obj,) = parse_objects(_loc(10, 20, 30, 40) + SEG16 + " person", (64, 64))
    assert obj.label == "person" and obj.seg_codes == CODES16 and obj.mask is None


@pytest.mark.parametrize("text, expected", [
    (_loc(1, 2, 3) + " cat", []),  # 3 locs: skipped
    (_loc(1, 2, 3, 4), [("", (1, 2, 3, 4))]),  # empty label
    (_loc(1, 2, 3, 4) + " ; " + _loc(5, 6, 7, 8) + " ; ", [("", (1, 2, 3, 4)), ("", (5, 6, 7, 8))]),
    (_loc(1, 2, 3, 4) + "cat" + _loc(5, 6, 7, 8) + "dog", [("cat", (1, 2, 3, 4)), ("dog", (5, 6, 7, 8))]),
    (_loc(1, 2, 3, 4, 5, 6, 7, 8) + " x", [("", (1, 2, 3, 4)), ("x", (5, 6, 7, 8))]),  # no separator at all
    ("  <loc0001>  <loc0002>\n<loc0003> <loc0004>   big   dog  \n", [("big dog", (1, 2, 3, 4))]),
    ("<loc1500><loc0002><loc0003><loc0004> bad ; " + _loc(1, 2, 3, 4) + " ok", [("ok", (1, 2, 3, 4))]),
    ("<loc99999999999999999999999999><loc1><loc2><loc3> x", []),
    ("<loc0001><loc0002> junk <loc0003><loc0004> x", []),  # text inside a loc run
    ("<loc0001><loc0002><seg001><loc0003><loc0004> x", []),  # seg inside a loc run
    ("<loc0001><loc0002><seg001>" + _loc(5, 6, 7, 8) + " x", [("x", (5, 6, 7, 8))]),
    ("prefix words " + _loc(1, 2, 3, 4) + " cat<eos>trailing", [("cat", (1, 2, 3, 4))]),
    (_loc(1, 2, 3, 4) + " cat <seg01", [("cat", (1, 2, 3, 4))]),  # truncated tag is not label text
    ("<loc0001><loc0002><loc0003><loc0004>   ", [("", (1, 2, 3, 4))]),
    ("", []),
    (";;;<><loc>", []),
])
def test_malformed_and_truncated(text, expected):
    got = [(o.label, tuple(round(v * LOC_DENOMINATOR) for v in o.box_norm)) for o in parse_objects(text, (10, 10))]
    assert got == expected


@pytest.mark.parametrize("segs, codes", [
    (SEG16[:-8], None),  # 15 codes
    (SEG16 + "<seg000>", None),  # 17 codes
    (SEG16[:-8] + "<seg128>", None),  # out of range code
    ("", None),
    (SEG16, CODES16),
])
def test_seg_count_other_than_16_keeps_the_box(segs, codes):
    (obj,) = parse_objects(_loc(1, 2, 3, 4) + segs + " cat", (10, 10))
    assert obj.seg_codes == codes and obj.label == "cat"


def test_seg_codes_after_the_label_are_not_a_mask():
    (obj,) = parse_objects(_loc(1, 2, 3, 4) + " cat " + SEG16, (10, 10))
    assert obj.seg_codes is None and obj.label == "cat"


def test_bad_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size"):
        parse_objects("", (0, 10))


def test_parse_token_ids_renders_loc_and_seg_ids():
    loc_start, seg_start = 1000, 2024
    words = {7: " cat", 8: " dog"}

    def decode(ids):
        return "".join(words.get(i, "") for i in ids)

    ids = [loc_start + 1, loc_start + 2, loc_start + 3, loc_start + 4, *[seg_start + c for c in CODES16], 7]
    assert ids_to_text(ids, loc_start, seg_start, decode) == _loc(1, 2, 3, 4) + SEG16 + " cat"
    (obj,) = parse_token_ids(ids, loc_start, seg_start, decode, (10, 10))
    assert obj.label == "cat" and obj.seg_codes == CODES16


def test_format_detection_known_string_and_bad_inputs():
    text = format_detection([(0.1, 0.2, 0.3, 0.4), (0, 0, 1, 1)], ["red car", ""], [None, CODES16])
    assert text == "<loc0102><loc0205><loc0307><loc0409> red car ; " + _loc(0, 0, 1023, 1023) + SEG16
    with pytest.raises(ValueError):
        format_detection([(0, 0, 1, 1)], ["a ; b"])
    with pytest.raises(ValueError):
        format_detection([(0, 0, 1)], ["a"])
    with pytest.raises(ValueError):
        format_detection([(0, 0, 1, 1)], ["a"], [(1, 2, 3)])


# -- properties ------------------------------------------------------------------------------------

_TOKENISH = st.one_of(
    st.text(max_size=8),
    st.sampled_from([";", " ; ", " ", "<", ">", "<eos>", "\n", "<loc", "<seg", "<loc>", "<seg12"]),
    st.integers(0, 2000).map(lambda v: f"<loc{v:04d}>"),
    st.integers(0, 200).map(lambda v: f"<seg{v:03d}>"),
    st.integers(0, 10 ** 12).map(lambda v: f"<loc{v}>"),
)
_SIZES = st.tuples(st.integers(1, 5000), st.integers(1, 5000))


def _check_object(obj: DetectedObject, size: tuple[int, int]) -> None:
    w, h = size
    assert len(obj.box) == 4 and len(obj.box_norm) == 4
    y0, x0, y1, x1 = obj.box_norm
    assert 0.0 <= y0 <= y1 <= 1.0 and 0.0 <= x0 <= x1 <= 1.0
    bx0, by0, bx1, by1 = obj.box
    assert 0.0 <= bx0 <= bx1 <= w and 0.0 <= by0 <= by1 <= h
    assert obj.seg_codes is None or (len(obj.seg_codes) == 16 and all(0 <= c < 128 for c in obj.seg_codes))
    assert not any(c in obj.label for c in ";<>") and obj.label == obj.label.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(), _SIZES)
def test_arbitrary_text_never_raises(text, size):
    for obj in parse_objects(text, size):
        _check_object(obj, size)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKENISH, max_size=40), _SIZES)
def test_token_soup_never_raises(parts, size):
    for obj in parse_objects("".join(parts), size):
        _check_object(obj, size)


_UNIT = st.floats(0.0, 1.0, allow_nan=False)
_BOX = st.tuples(_UNIT, _UNIT, _UNIT, _UNIT).map(lambda b: (min(b[0], b[2]), min(b[1], b[3]),
                                                           max(b[0], b[2]), max(b[1], b[3])))
_LABEL = st.text(st.characters(exclude_characters=";<>", exclude_categories=("Cs",)), max_size=12)
_OBJECTS = st.lists(st.tuples(_BOX, _LABEL, st.none() | st.tuples(*[st.integers(0, 127)] * 16)), max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OBJECTS, _SIZES)
def test_format_then_parse_round_trips(objects, size):
    boxes, labels, codes = ([o[i] for o in objects] for i in range(3))
    parsed = parse_objects(format_detection(boxes, labels, codes), size)
    assert len(parsed) == len(objects)
    for obj, box, label, obj_codes in zip(parsed, boxes, labels, codes):
        assert np.allclose(obj.box_norm, box, atol=0.5 / LOC_DENOMINATOR + 1e-12)
        assert obj.label == " ".join(label.split()) and obj.seg_codes == obj_codes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OBJECTS.filter(bool))
def test_every_prefix_parses_to_a_prefix_of_the_objects(objects):
    size = (320, 240)
    text = format_detection(*([o[i] for o in objects] for i in range(3)))
    full = parse_objects(text, size)
    for end in range(len(text) + 1):
        got = parse_objects(text[:end], size)
        assert len(got) <= len(full)
        for g, f in zip(got, full):
            _check_object(g, size)
            assert g.box_norm == f.box_norm and f.label.startswith(g.label)
            assert g.seg_codes in (None, f.seg_codes)


# -- masks ----------------------------------------------------------------------------------------

def test_paste_mask_fills_the_box_only():
    mask = paste_mask(np.ones((64, 64), np.float32), (10.7, 20.2, 30.9, 25.0), (100, 50))
    assert mask.shape == (50, 100) and mask.dtype == bool
    expected = np.zeros((50, 100), bool)
    expected[20:25, 10:30] = True  # truncated like big_vision's evaluator
    assert np.array_equal(mask, expected)


def test_paste_mask_resizes_bilinear_and_thresholds_at_zero():
    left_half = np.where(np.arange(64) < 32, 1.0, -1.0).astype(np.float32)[None, :].repeat(64, 0)
    mask = paste_mask(left_half, (0, 0, 128, 64), (128, 64))
    assert mask[:, :64].all() and not mask[:, 64:].any()


@pytest.mark.parametrize("box", [(5, 5, 5, 20), (5, 5, 20, 5), (30, 30, 10, 10), (-10, -10, 0, 0),
                                 (200, 0, 300, 10), (float("nan"), 0, 5, 5)])
def test_paste_mask_degenerate_boxes_are_empty(box):
    mask = paste_mask(np.ones((64, 64), np.float32), box, (100, 50))
    assert mask.shape == (50, 100) and not mask.any()


def test_attach_masks_decodes_once_and_pastes():
    objects = parse_objects(_loc(0, 0, 511, 511) + SEG16 + " a ; " + _loc(0, 0, 1023, 1023) + " b", (20, 10))
    calls = []

    def decode(codes):
        calls.append(codes.copy())
        return np.ones((len(codes), 64, 64), np.float32)

    a, b = attach_masks(objects, decode, (20, 10))
    assert len(calls) == 1 and calls[0].shape == (1, 16) and calls[0].dtype == np.int32
    assert a.mask.shape == (10, 20) and a.mask[:4, :9].all() and b.mask is None
    assert dataclasses.replace(a, mask=None) == objects[0]
