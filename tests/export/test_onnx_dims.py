"""Symbolic dimensions in the ONNX lowering: affine forms, and a traced graph that runs at several lengths."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from jax import export

from pg2edge.export.onnx_dims import affine
from pg2edge.export.onnx_export import export_parts
from pg2edge.export.split import Part, TensorSpec


def test_affine_reads_constant_and_coefficients():
    m, t = export.symbolic_shape("m, t")
    assert affine(5) == (5, {})
    assert affine(m + t) == (0, {"m": 1, "t": 1})
    assert affine(2 * t + 64) == (64, {"t": 2})
    with pytest.raises(NotImplementedError, match="not affine"):
        affine(m * t)


def test_symbolic_graph_matches_jax_at_every_length(tmp_path):
    """iota, broadcast constants, reshapes and slices of a symbolic axis, down to length 0."""
    w = np.random.RandomState(0).normal(size=(8, 6)).astype(np.float32)

    def fn(params, a, b):
        x = jnp.concatenate([a, b], axis=1)  # [1, m + t, 8]
        n = x.shape[1]
        y = (x @ params["w"]).reshape(1, n, 2, 3)
        mask = jnp.arange(n)[None, :, None, None] < 2
        y = jnp.where(mask, y, -1e9)
        return (y[..., :2].reshape(1, n, 4), jnp.sum(y, axis=(1, 2, 3)))

    part = Part("f", fn, (TensorSpec("a", (1, "m", 8), "float32"), TensorSpec("b", (1, "t", 8), "float32")),
                (TensorSpec("y", (1, "m + t", 4), "float32"), TensorSpec("s", (1,), "float32")))
    info = export_parts([part], {"w": w}, tmp_path)["f"]
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    rs = np.random.RandomState(1)
    for m, t in [(0, 1), (3, 5), (7, 0)]:
        a, b = rs.normal(size=(1, m, 8)).astype(np.float32), rs.normal(size=(1, t, 8)).astype(np.float32)
        got = session.run(None, {"a": a, "b": b})
        for g, r in zip(got, fn({"w": w}, a, b)):
            np.testing.assert_allclose(g, np.asarray(r), rtol=1e-5, atol=1e-3)
