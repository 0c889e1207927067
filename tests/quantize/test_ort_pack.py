"""Packed initializers run in onnxruntime's MatMulNBits / GatherBlockQuantized equal the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from pg2edge.quantize import Scheme, dequantize, quantize
from pg2edge.quantize.ort_pack import dequantize_linear_initializers, pack_gather_block_quantized, pack_matmul_nbits

onnx = pytest.importorskip("onnx")
from ort_nodes import (dequantize_linear_matmul_nodes, gather_block_quantized_node,  # noqa: E402
                       matmul_nbits_node, tied_gather_nodes)
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

RNG = np.random.default_rng(0)


def _session(nodes, initializers, inputs, outputs, opset=21, config=None):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _matmul(nodes, inits, k, x, **kw):
    sess = _session(nodes, inits, [("x", TensorProto.FLOAT, list(x.shape))], ["y"], **kw)
    return sess.run(None, {"x": x})[0]


def _weight(k, n):
    return (RNG.standard_normal((k, n)) * 0.05).astype(np.float32)


def _assert_exact_float(y, x, w_hat):
    """accuracy_level 0: float32 activations, so only float32 summation order differs."""
    ref = x.astype(np.float64) @ w_hat.astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def _assert_int8_activations(y, x, w_hat):
    """accuracy_level 4: A is quantized to int8 per block with scale <= max|A row| / 127.

    Rounding moves each activation by at most half a step, max|A row| / 254, so
    |y - x @ w_hat| <= max|A row| / 254 * sum_k |w_hat[k, n]| (+ float32 noise).
    Measured on Gaussian data the error is ~0.5% relative (Frobenius), 5-20x below the bound.
    """
    ref = x.reshape(-1, x.shape[-1]).astype(np.float64) @ w_hat.astype(np.float64)
    bound = np.abs(x.reshape(ref.shape[0], -1)).max(1, keepdims=True) / 254 * np.abs(w_hat).sum(0)
    err = np.abs(y.reshape(ref.shape) - ref)
    assert (err <= bound * 1.01 + 1e-5 * np.abs(ref).max()).all()
    assert np.linalg.norm(err) / np.linalg.norm(ref) < 2e-2


MATMUL_CASES = [  # (scheme, K, N, per-channel block_size)
    (Scheme(4, 32), 256, 96, None),
    (Scheme(4, 64), 256, 96, None),
    (Scheme(4, 128), 256, 96, None),
    (Scheme(8, 32), 256, 96, None),
    (Scheme(8), 256, 96, None),  # per-channel as block 128 with repeated scales
    (Scheme(8), 256, 96, 32),
    (Scheme(8), 80, 40, 32),  # K not a multiple of the block: padded with the zero point
    (Scheme(4), 48, 16, 16),
    (Scheme(4, 32, "float16"), 128, 64, None),
]


@pytest.mark.parametrize("accuracy_level", [0, 4])
@pytest.mark.parametrize("scheme,k,n,block_size", MATMUL_CASES, ids=lambda v: getattr(v, "label", str(v)))
def test_matmul_nbits_matches_reference(scheme, k, n, block_size, accuracy_level):
    qt = quantize(_weight(k, n), scheme)
    packed = pack_matmul_nbits(qt, block_size)
    assert packed.zero_points is None and packed.b.dtype == np.uint8
    nodes, inits = matmul_nbits_node("x", "y", "w", packed, accuracy_level)
    x = RNG.standard_normal((3, k)).astype(np.float32)
    y = _matmul(nodes, inits, k, x)
    check = _assert_exact_float if accuracy_level == 0 else _assert_int8_activations
    check(y, x, dequantize(qt))


def test_matmul_nbits_rank3_input():
    qt = quantize(_weight(128, 32), Scheme(4, 32))
    nodes, inits = matmul_nbits_node("x", "y", "w", pack_matmul_nbits(qt))
    x = RNG.standard_normal((2, 5, 128)).astype(np.float32)
    y = _matmul(nodes, inits, 128, x)
    assert y.shape == (2, 5, 32)
    _assert_exact_float(y.reshape(10, 32), x.reshape(10, 128), dequantize(qt))


def test_pack_layout_low_nibble_first():
    w = np.zeros((32, 1), np.float32)
    w[:4, 0] = [-7.0, 7.0, 1.0, 0.0]  # max 7 -> scale 1
    packed = pack_matmul_nbits(quantize(w, Scheme(4, 32)))
    assert packed.b.shape == (1, 1, 16) and packed.scales.shape == (1, 1)
    # codes stored as q + 8: [1, 15, 9, 8, 8, ...] -> bytes [0xF1, 0x89, 0x88, ...]
    assert packed.b[0, 0, :3].tolist() == [0xF1, 0x89, 0x88]
    packed8 = pack_matmul_nbits(quantize(w, Scheme(8)), block_size=16)
    assert packed8.b.shape == (1, 2, 16) and packed8.scales.shape == (1, 2)
    assert packed8.b[0, 0, :4].tolist() == [128 - 127, 128 + 127, 128 + 18, 128]
    assert packed8.scales[0, 0] == packed8.scales[0, 1]


def test_pack_errors():
    qt = quantize(_weight(64, 8), Scheme(4, 32))
    with pytest.raises(ValueError, match="differs from the weight's int4-b32 block"):
        pack_matmul_nbits(qt, block_size=64)
    with pytest.raises(ValueError, match="power of two >= 16"):
        pack_matmul_nbits(quantize(_weight(64, 8), Scheme(8)), block_size=24)
    with pytest.raises(ValueError, match="int8 only"):
        dequantize_linear_initializers(qt)
    assert pack_gather_block_quantized(quantize(_weight(80, 8), Scheme(8))).block_size == 16
    with pytest.raises(ValueError, match="embedding width 40 is not a multiple of the gather block 16"):
        pack_gather_block_quantized(quantize(_weight(40, 8), Scheme(8)))
    with pytest.raises(ValueError, match="embedding width 80 is not a multiple of the block 128"):
        tied_gather_nodes("ids", "y", "emb", "head", pack_matmul_nbits(quantize(_weight(80, 8), Scheme(8))))
    with pytest.raises(ValueError, match="accuracy_level"):
        matmul_nbits_node("x", "y", "w", pack_matmul_nbits(qt), accuracy_level=5)


def _table_qt(vocab, width, scheme):
    """An embedding table [V, Dt] quantized as its LM head, [K=Dt, N=V]."""
    table = (RNG.standard_normal((vocab, width)) * 0.05).astype(np.float32)
    return quantize(table.T, scheme)


GATHER_SCHEMES = [Scheme(4, 32), Scheme(4, 64), Scheme(4, 128), Scheme(8, 32), Scheme(8)]


@pytest.mark.parametrize("ids_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("scheme,width", [(s, 128) for s in GATHER_SCHEMES] + [(Scheme(8), 96)],
                         ids=lambda v: getattr(v, "label", str(v)))
def test_gather_block_quantized_equals_dequantized_rows(scheme, width, ids_dtype):
    qt = _table_qt(300, width, scheme)
    nodes, inits = gather_block_quantized_node("ids", "y", "emb", pack_gather_block_quantized(qt))
    onnx_type = TensorProto.INT64 if ids_dtype == np.int64 else TensorProto.INT32
    sess = _session(nodes, inits, [("ids", onnx_type, [2, 3])], ["y"])
    ids = np.array([[0, 299, 7], [7, 150, 1]], ids_dtype)
    y = sess.run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(y, dequantize(qt).T[ids])


@pytest.mark.parametrize("scheme", GATHER_SCHEMES, ids=lambda s: s.label)
def test_tied_gather_shares_the_lm_head_codes(scheme):
    qt = _table_qt(300, 128, scheme)
    packed = pack_matmul_nbits(qt)
    head_nodes, head_inits = matmul_nbits_node("x", "logits", "lm_head", packed)
    emb_nodes, emb_inits = tied_gather_nodes("ids", "y", "emb", "lm_head", packed)
    assert [i.name for i in emb_inits] == ["emb.scales_shape", "emb.out_shape"]  # no second copy of the codes
    sess = _session(head_nodes + emb_nodes, head_inits + emb_inits,
                    [("ids", TensorProto.INT64, [2, 3]), ("x", TensorProto.FLOAT, [2, 128])], ["y", "logits"])
    ids = np.array([[0, 299, 7], [7, 150, 1]], np.int64)
    x = RNG.standard_normal((2, 128)).astype(np.float32)
    y, logits = sess.run(None, {"ids": ids, "x": x})
    table = dequantize(qt).T
    np.testing.assert_array_equal(y, table[ids])
    _assert_exact_float(logits, x, table.T)


@pytest.mark.parametrize("scheme", [Scheme(8), Scheme(8, 32)], ids=lambda s: s.label)
def test_dequantize_linear_matmul(scheme):
    qt = quantize(_weight(256, 64), scheme)
    nodes, inits = dequantize_linear_matmul_nodes("x", "y", "w", dequantize_linear_initializers(qt))
    x = RNG.standard_normal((3, 256)).astype(np.float32)
    # onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits bits=8 whose accuracy level is a
    # session option (default 4 = int8 activations); level 0 keeps activations float.
    exact = _matmul(nodes, inits, 256, x, config={"session.qdq_matmulnbits_accuracy_level": "0"})
    _assert_exact_float(exact, x, dequantize(qt))
    _assert_int8_activations(_matmul(nodes, inits, 256, x), x, dequantize(qt))
    unfused = _matmul(nodes, inits, 256, x, config={"session.disable_quant_qdq": "1"})
    _assert_exact_float(unfused, x, dequantize(qt))


@pytest.mark.parametrize("k,block,n_blocks", [(256, 128, 2), (2304, 128, 18), (588, 128, 5), (48, 64, 1),
                                              (64, 64, 1), (16, 16, 1)])
def test_default_per_channel_block(k, block, n_blocks):
    packed = pack_matmul_nbits(quantize(_weight(k, 2), Scheme(8)))
    assert (packed.block_size, packed.n_blocks, packed.b.shape[2]) == (block, n_blocks, block)
