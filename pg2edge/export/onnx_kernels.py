"""Named calls of `pg2edge.model.layers` that one standard ONNX operator computes (opset >= 23).

The model marks its norms, GELU and softmax as `jax.jit` calls; the lowering looks
the call's name up here and emits one node instead of the call's dozen elementwise
ones. A handler returns None when the call does not fit (e.g. a non-float32 input),
and the lowering then inlines the call as usual.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pg2edge.export.onnx_graph import Const, Dyn, GraphBuilder

Materialize = Callable[[Const], str]


def _float32_dyn(x) -> bool:
    return isinstance(x, Dyn) and x.dtype == np.float32


def rms_norm(g: GraphBuilder, materialize: Materialize, ins: list) -> str | None:
    """Gemma's `x * rsqrt(mean(x^2) + eps) * (1 + scale)` as one `RMSNormalization`."""
    x, scale, eps = ins
    if not (_float32_dyn(x) and isinstance(scale, Const) and isinstance(eps, Const)):
        return None
    gamma = g.const((1.0 + scale.array().astype(np.float32)).astype(np.float32), scale.param or "scale")
    return g.op("RMSNormalization", [x.name, gamma], axis=-1, epsilon=float(eps.array()), stash_type=1)


def layer_norm(g: GraphBuilder, materialize: Materialize, ins: list) -> str | None:
    """SigLIP's LayerNorm as one `LayerNormalization` (statistics in float32)."""
    x, scale, bias, eps = ins
    if not (_float32_dyn(x) and all(isinstance(v, Const) for v in (scale, bias, eps))):
        return None
    return g.op("LayerNormalization", [x.name, materialize(scale), materialize(bias)], axis=-1,
                epsilon=float(eps.array()), stash_type=1)


def gelu_tanh(g: GraphBuilder, materialize: Materialize, ins: list) -> str | None:
    """The tanh-approximated GELU as one `Gelu(approximate="tanh")`."""
    return g.op("Gelu", [ins[0].name], approximate="tanh") if _float32_dyn(ins[0]) else None


def softmax(g: GraphBuilder, materialize: Materialize, ins: list) -> str | None:
    """Last-axis softmax as one `Softmax`."""
    return g.op("Softmax", [ins[0].name], axis=-1) if _float32_dyn(ins[0]) else None


KERNELS: dict[str, Callable[[GraphBuilder, Materialize, list], str | None]] = {
    "rms_norm": rms_norm, "layer_norm": layer_norm, "gelu_tanh": gelu_tanh, "softmax": softmax,
}
