"""Properties of the numpy reference schemes: error bound, code range, zeros, idempotence, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pg2edge.quantize import Scheme, dequantize, dequantize_rows, fake_quant, quantize, relative_error

SCHEMES = [Scheme(4, 16), Scheme(4, 32), Scheme(4, 64), Scheme(8), Scheme(8, 32), Scheme(4),
           Scheme(4, 32, "float16"), Scheme(8, None, "float16")]
# Finite float32 short of the very top of the range, where q * scale can round up to inf.
_FINITE = st.floats(min_value=-2.0**120, max_value=2.0**120, width=32)
_FP16_SAFE = st.floats(min_value=-2.0**15, max_value=2.0**15, width=32)  # max|w| / qmax must fit a float16 scale


@st.composite
def weight_and_scheme(draw):
    """A [K, N] weight (K a multiple of the block) with mixed magnitudes, and a scheme."""
    scheme = draw(st.sampled_from(SCHEMES))
    block = scheme.block or draw(st.sampled_from([3, 16, 40]))
    k = block * draw(st.integers(1, 3))
    n = draw(st.integers(1, 4))
    elements = _FP16_SAFE if scheme.scale_dtype == "float16" else _FINITE
    w = draw(hnp.arrays(np.float32, (k, n), elements=elements))
    return w, scheme


def _scale_kn(qt):
    """Each weight's scale, broadcast back to [K, N]."""
    return np.repeat(qt.scales, qt.block_size, axis=1).T


@settings(max_examples=300, deadline=None)
@given(weight_and_scheme())
def test_error_at_most_half_a_step(case):
    w, scheme = case
    qt = quantize(w, scheme)
    err = np.abs(w.astype(np.float64) - dequantize(qt))
    assert (err <= _scale_kn(qt).astype(np.float64) * (0.5 + 1e-6)).all()


@settings(max_examples=300, deadline=None)
@given(weight_and_scheme())
def test_codes_and_scales_well_formed(case):
    w, scheme = case
    qt = quantize(w, scheme)
    k, n = w.shape
    assert qt.q.dtype == np.int8 and qt.q.shape == (n, k)
    assert qt.scales.dtype == np.float32 and qt.scales.shape == (n, k // (scheme.block or k))
    assert qt.q.min() >= -scheme.qmax - 1 and qt.q.max() <= scheme.qmax
    assert (qt.scales > 0).all() and np.isfinite(qt.scales).all()
    if scheme.scale_dtype == "float16":
        assert (qt.scales.astype(np.float16).astype(np.float32) == qt.scales).all()


@settings(max_examples=300, deadline=None)
@given(weight_and_scheme())
def test_fake_quant_is_idempotent(case):
    w, scheme = case
    qt = quantize(w, scheme)
    once = dequantize(qt)
    twice = fake_quant(once, scheme)
    if scheme.scale_dtype == "float16":
        # Rounding a scale up to float16 is exact only in float16's normal range;
        # subnormal scales (blocks with max|w| < qmax * 6.1e-5) may move.
        normal = _scale_kn(qt) >= np.finfo(np.float16).tiny
        once, twice = once[normal], twice[normal]
    np.testing.assert_array_equal(twice, once)


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.label)
def test_zero_weight_dequantizes_to_zeros(scheme):
    w = np.zeros((128, 5), np.float32)
    qt = quantize(w, scheme)
    assert not qt.q.any()
    np.testing.assert_array_equal(dequantize(qt), w)
    assert relative_error(w, dequantize(qt)) == 0.0


def test_zero_block_next_to_nonzero_block():
    w = np.zeros((64, 2), np.float32)
    w[32:, 0] = np.linspace(-1, 1, 32)
    out = fake_quant(w, Scheme(4, 32))
    np.testing.assert_array_equal(out[:32], 0.0)
    assert np.abs(out[32:, 0] - w[32:, 0]).max() <= 1 / 14 + 1e-7


def test_known_values_round_half_to_even():
    # max |w| = 7 -> scale 1: 2.5 -> 2, 3.5 -> 4, -0.5 -> -0, 1.49 -> 1
    w = np.array([[7.0], [2.5], [3.5], [-0.5], [1.49], [-7.0]] + [[0.0]] * 10, np.float32)
    qt = quantize(w, Scheme(4, 16))
    assert qt.scales[0, 0] == 1.0
    assert qt.q[0, :6].tolist() == [7, 2, 4, 0, 1, -7]


def test_per_channel_scale_per_output_column():
    w = np.stack([np.full(48, 127.0), np.full(48, 1.27)], axis=1).astype(np.float32)
    qt = quantize(w, Scheme(8))
    np.testing.assert_allclose(qt.scales[:, 0], [1.0, 0.01], rtol=1e-6)
    assert (qt.q == 127).all()


def test_float16_scales_round_up():
    w = np.full((32, 1), 0.1, np.float32)
    qt = quantize(w, Scheme(4, 32, "float16"))
    assert qt.scales[0, 0] >= np.float32(0.1) / 7
    assert qt.scales[0, 0] == np.float16(qt.scales[0, 0])


def test_block_must_divide_k_and_error_names_tensor():
    with pytest.raises(ValueError, match=r"llm/layers/mlp/linear\[3\].*K=48.*\[48, 8\].*block 32"):
        quantize(np.ones((48, 8), np.float32), Scheme(4, 32), name="llm/layers/mlp/linear[3]")


@pytest.mark.parametrize("bad", [np.ones((4,), np.float32), np.ones((2, 2, 2), np.float32)])
def test_rejects_non_matrix(bad):
    with pytest.raises(ValueError, match="expected a \\[K, N\\] matmul weight"):
        quantize(bad, Scheme(8), name="w")


def test_rejects_non_finite():
    w = np.ones((32, 2), np.float32)
    w[3, 1] = np.nan
    with pytest.raises(ValueError, match="img/head/kernel.*NaN"):
        quantize(w, Scheme(8), name="img/head/kernel")


def test_float16_scale_overflow_is_an_error():
    with pytest.raises(ValueError, match="overflows a float16 scale"):
        quantize(np.full((32, 1), 1e6, np.float32), Scheme(4, 32, "float16"))


@pytest.mark.parametrize("kwargs", [dict(bits=3), dict(bits=4, block=48), dict(bits=4, block=8),
                                    dict(bits=8, scale_dtype="bfloat16"), dict(bits=4, block=32, clip="l1"),
                                    dict(bits=4, clip="mse")])
def test_invalid_schemes(kwargs):
    with pytest.raises(ValueError):
        Scheme(**kwargs)


def test_chunked_rows_match_unchunked(monkeypatch):
    from pg2edge.quantize import schemes

    w = np.random.default_rng(0).standard_normal((64, 37)).astype(np.float32)
    whole = quantize(w, Scheme(4, 32))
    monkeypatch.setattr(schemes, "_CHUNK_ELEMENTS", 64 * 5)
    chunked = quantize(w, Scheme(4, 32))
    np.testing.assert_array_equal(whole.q, chunked.q)
    np.testing.assert_array_equal(whole.scales, chunked.scales)


MSE_SCHEMES = [Scheme(4, 16, clip="mse"), Scheme(4, 32, clip="mse"), Scheme(8, 32, clip="mse"),
               Scheme(4, 32, "float16", clip="mse")]


@st.composite
def weight_and_mse_scheme(draw):
    """A [K, N] weight for a clip-searched scheme: a spread of magnitudes, some heavy-tailed blocks."""
    scheme = draw(st.sampled_from(MSE_SCHEMES))
    k, n = scheme.block * draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)) * 10.0 ** rng.uniform(-3, 2)
    if draw(st.booleans()):
        w = w * rng.standard_t(2, (k, n))
    return w.astype(np.float32), scheme


def _block_errors(w, qt):
    """Squared error of each [N, block] block, in float64."""
    d = dequantize_rows(qt).astype(np.float64) - w.T.astype(np.float64)
    return (d ** 2).reshape(qt.n, qt.n_blocks, qt.block_size).sum(-1)


@settings(max_examples=200, deadline=None)
@given(weight_and_mse_scheme())
def test_mse_clip_picks_the_least_error_grid_scale(case):
    from dataclasses import replace

    from pg2edge.quantize.schemes import CLIP_GRID

    w, scheme = case
    qt = quantize(w, scheme)
    assert qt.q.min() >= -scheme.qmax - 1 and qt.q.max() <= scheme.qmax and (qt.scales > 0).all()
    w_nbk = w.T.reshape(qt.n, qt.n_blocks, qt.block_size)
    codes = np.clip(np.rint(w_nbk / qt.scales[..., None]), -scheme.qmax - 1, scheme.qmax)
    np.testing.assert_array_equal(codes.reshape(qt.n, -1), qt.q)  # the codes are those of the chosen scale
    grid = np.stack([_grid_scales(w_nbk, scheme, alpha) for alpha in CLIP_GRID])
    assert (grid == qt.scales).any(axis=0).all()  # each block's scale is one of its candidates
    err = _block_errors(w, qt)
    brute = np.stack([_grid_error(w_nbk, scale, scheme) for scale in grid]).min(0)  # float64, independently
    assert (err <= brute * (1 + 1e-5) + 1e-30).all()
    plain = _block_errors(w, quantize(w, replace(scheme, clip="max")))
    assert (err <= plain * (1 + 1e-5) + 1e-30).all()  # alpha = 1 is a candidate: never worse than max|w|


def _grid_scales(w_nbk, scheme, alpha):
    """The candidate scales of alpha * max|w| / qmax (float16-rounded when the scheme says so)."""
    from pg2edge.quantize.schemes import _scales

    return _scales(np.abs(w_nbk).max(-1) * np.float32(alpha), scheme, None)


def _grid_error(w_nbk, scale, scheme):
    """Block squared errors in float64 of quantizing with `scale` per block."""
    q = np.clip(np.rint(w_nbk / scale[..., None]), -scheme.qmax - 1, scheme.qmax)
    return (((q * scale[..., None]).astype(np.float64) - w_nbk.astype(np.float64)) ** 2).sum(-1)


def test_mse_clip_trades_an_outlier_for_a_finer_step():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((32, 64)) * 0.02).astype(np.float32)
    w[5] *= 3.0  # one large weight per block: max|w| scaling wastes most of the 16 levels
    plain, searched = quantize(w, Scheme(4, 32)), quantize(w, Scheme(4, 32, clip="mse"))
    assert (searched.scales <= plain.scales).all() and (searched.scales < plain.scales).mean() > 0.5
    assert relative_error(w, dequantize(searched)) < 0.95 * relative_error(w, dequantize(plain))


def test_chunked_search_matches_unchunked(monkeypatch):
    from pg2edge.quantize import schemes

    w = np.random.default_rng(0).standard_normal((64, 37)).astype(np.float32)
    whole = quantize(w, Scheme(4, 32, clip="mse"))
    monkeypatch.setattr(schemes, "_SEARCH_CHUNK_ELEMENTS", 64 * 3)
    chunked = quantize(w, Scheme(4, 32, clip="mse"))
    np.testing.assert_array_equal(whole.q, chunked.q)
    np.testing.assert_array_equal(whole.scales, chunked.scales)


def test_relative_error():
    w = np.array([3.0, 4.0])
    assert relative_error(w, w) == 0.0
    assert relative_error(w, np.zeros(2)) == 1.0
    assert relative_error(np.zeros(2), np.ones(2)) == float("inf")
    assert relative_error(w, [3.0, 4.5]) == pytest.approx(0.1)


def test_labels():
    assert Scheme(4, 32).label == "int4-b32"
    assert Scheme(8).label == "int8-pc"
    assert Scheme(4, 64, "float16").label == "int4-b64-f16s"
    assert Scheme(4, 32, clip="mse").label == "int4-b32-mse"
    assert Scheme(4, 64).to_dict() == {"bits": 4, "block": 64, "scale_dtype": "float32", "clip": "max"}


def test_dequantize_rows_into_caller_buffer():
    qt = quantize(np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32), Scheme(4, 32))
    out = np.empty((3, 64), np.float32)
    assert dequantize_rows(qt, out=out) is out
    np.testing.assert_array_equal(out, dequantize(qt).T)
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape \\(3, 64\\)"):
        dequantize_rows(qt, out=np.empty((64, 3), np.float32).T)
