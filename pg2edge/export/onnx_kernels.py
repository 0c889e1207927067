"""Named calls of the model that one ONNX operator computes (standard opset >= 23, or onnxruntime's contrib).

The model marks its norms, GELU and softmax as `jax.jit` calls; the lowering looks
the call's name up here and emits one node instead of the call's dozen elementwise
ones. A handler returns None when the call does not fit (e.g. a non-float32 input),
and the lowering then inlines the call as usual.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto, helper

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


def cached_attention(g: GraphBuilder, materialize: Materialize, ins: list) -> list[str] | None:
    """`gemma2.cached_attention` as one `com.microsoft.GroupQueryAttention` (non-causal, soft-capped).

    Its `present_*` outputs are the cache with the chunk written in; when the caller binds them to the
    `past_*` input buffers, onnxruntime writes only the chunk's slots, and attention reads only the
    `start + T` filled slots instead of the whole capacity. The window of a local layer (when the cache is
    longer than it) becomes an additive bias over those slots.
    """
    q, k, v, k_cache, v_cache, start, scale, softcap, window = ins
    if not (all(_float32_dyn(x) for x in (q, k, v, k_cache, v_cache)) and isinstance(start, Dyn)
            and all(isinstance(c, Const) for c in (scale, softcap, window))):
        return None
    b, t, n, h = q.shape
    kv_heads, slots = k_cache.shape[1], k_cache.shape[2]
    flat = [g.reshape(x.name, (b, t, heads * h)) for x, heads in ((q, n), (k, kv_heads), (v, kv_heads))]
    chunk = g.op("Cast", [g.dim(t)], to=TensorProto.INT32)
    start_i32 = start.name if start.dtype == np.int32 else g.op("Cast", [start.name], to=TensorProto.INT32)
    total_b = g.op("Add", [start_i32, chunk], "total")  # [B]
    seqlens = g.op("Sub", [total_b, g.const(np.ones(1, np.int32), "one")], "seqlens_k")
    total = g.op("ReduceMax", [total_b], "total_len", keepdims=0)
    inputs = [*flat, k_cache.name, v_cache.name, seqlens, total]
    if int(window.array()) < slots:
        inputs += ["", "", "", _window_bias(g, start_i32, chunk, total, int(window.array()))]
    out, present_k, present_v = (g.fresh(x) for x in ("gqa", "present_k", "present_v"))
    g.nodes.append(helper.make_node(
        "GroupQueryAttention", inputs, [out, present_k, present_v], domain="com.microsoft",
        num_heads=n, kv_num_heads=kv_heads, scale=float(scale.array()), softcap=float(softcap.array()), causal=0))
    return [g.reshape(out, (b, t, n, h)), present_k, present_v]


def _window_bias(g: GraphBuilder, start: str, chunk: str, total: str, window: int) -> str:
    """(int32 start [B], chunk length [1], filled slots []) -> additive bias [B, 1, T, start + T]: 0 where
    key slot s is in the chunk or within `window` of the query's position, float32 min elsewhere."""
    zero, one = g.const(np.zeros((), np.int32), "zero"), g.const(np.ones((), np.int32), "one")
    slot = g.op("Range", [zero, total, one], "slot")  # [S]
    row = g.op("Unsqueeze", [g.op("Range", [zero, g.op("Squeeze", [chunk]), one], "row"),
                             g.const(np.array([1], np.int64), "axes")])  # [T, 1]
    start4 = g.op("Unsqueeze", [start, g.const(np.array([1, 2, 3], np.int64), "axes")])  # [B,1,1,1]
    in_chunk = g.op("GreaterOrEqual", [slot, start4])  # [B,1,1,S]
    distance = g.op("Sub", [g.op("Add", [start4, row]), slot])  # [B,1,T,S]
    near = g.op("Less", [distance, g.const(np.array(window, np.int32), "window")])
    return g.op("Where", [g.op("Or", [in_chunk, near]), g.const(np.zeros((), np.float32), "zero"),
                          g.const(np.array(np.finfo(np.float32).min, np.float32), "neg")], "window_bias")


KERNELS: dict[str, Callable[[GraphBuilder, Materialize, list], str | list[str] | None]] = {
    "rms_norm": rms_norm, "layer_norm": layer_norm, "gelu_tanh": gelu_tanh, "softmax": softmax,
    "cached_attention": cached_attention,
}
