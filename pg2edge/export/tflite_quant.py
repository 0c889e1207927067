"""Recipe-driven int8 / int4 weights in a float TFLite flatbuffer, numerically equal to the numpy reference.

1. `plan_weights` maps every FULLY_CONNECTED / EMBEDDING_LOOKUP weight back to
   the parameter matrix it is (`matmul_view`), by value, and asks the recipe
   for its scheme.
2. ai-edge-quantizer rewrites those ops (per-op scope rules): matmul weights
   as dynamic-range (hybrid) FULLY_CONNECTED, which keeps int8/int4 weights in
   memory and quantizes activations to int8 inside the kernel (per-channel
   schemes can instead be weight-only when `exact`: int8/int4 constant ->
   DEQUANTIZE -> float op, equal to the reference, but LiteRT then holds a
   float32 copy of every weight, which only small models afford), and every
   quantized EMBEDDING_LOOKUP as the hybrid lookup (dequantizes the rows read).
3. The codes and scales it computed are then overwritten in place with
   `pg2edge.quantize.schemes.quantize` of the same matrix, so the file holds
   exactly the reference's numbers (ai-edge-quantizer rounds block-wise scales
   to bfloat16 precision, the reference does not).

TFLite stores block-wise scales as float16, so block-wise schemes are exported
with `scale_dtype="float16"` (the reference's round-up-to-float16 scales).
XNNPACK, LiteRT's default CPU delegate, then computes with those scales
rounded to bfloat16; the builtin kernels use them as stored.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pg2edge.export.tflite_convert import TFLiteExportError
from pg2edge.export.tflite_flatbuffer import Flatbuffer, subgraphs, weight_ops
from pg2edge.param_layout import flatten
from pg2edge.quantize.matmul_view import matmul_label, matmul_view
from pg2edge.quantize.recipes import Recipe, quantize_with
from pg2edge.quantize.schemes import QuantizedTensor, Scheme

if TYPE_CHECKING:
    from pg2edge.quantize.gptq import Hessians

QUANTIZABLE_OPS = ("FULLY_CONNECTED", "EMBEDDING_LOOKUP")


@dataclass(frozen=True)
class WeightPlan:
    """One matmul/embedding weight of the flatbuffer, the parameter matrix it is, and its scheme."""

    scope: str  # ai-edge-quantizer's name of the consuming op (its output tensor names + ';')
    op: str  # FULLY_CONNECTED | EMBEDDING_LOOKUP
    param: str  # big_vision key
    index: tuple[int, ...]  # which matmul of the stacked parameter (layer[, k/v or gate/up])
    scheme: Scheme | None  # None: stays float
    exact: bool = False  # per-channel weights through DEQUANTIZE + float op (a float copy at run time)
    hessians: Hessians | None = field(default=None, compare=False, repr=False)  # GPTQ codes where they cover

    @property
    def label(self) -> str:
        return matmul_label(self.param, self.index)

    @property
    def mode(self) -> str:
        """float | weight_only (exact, float at run time) | dynamic (int8 activations in the kernel) | lookup."""
        if self.scheme is None:
            return "float"
        if self.op == "EMBEDDING_LOOKUP":
            return "lookup"
        return "weight_only" if self.scheme.block is None and self.exact else "dynamic"

    def reference_nk(self, params_flat: dict) -> np.ndarray:
        """The float parameter matrix [N, K], as the op stores it."""
        return _matrix_kn(self.param, params_flat[self.param], self.index).T

    def quantized(self, params_flat: dict) -> QuantizedTensor:
        """The reference codes and scales of this weight."""
        return quantize_with(self.hessians, self.reference_nk(params_flat).T, self.scheme, name=self.label)


# ---------------------------------------------------------------- mapping weights to parameters

def _matrix_kn(name: str, w: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """One [K, N] matmul of a stacked parameter, without copying the rest of the stack."""
    view = matmul_view(name, np.shape(w))
    one = np.asarray(w[index], np.float32)
    return replace(view, shape=one.shape, lead=0).to_kn(one)


def _energy(w: np.ndarray) -> float:
    """sum((w / max|w|)^2): a cheap fingerprint that does not depend on the layout."""
    amax = float(np.abs(w).max())
    if amax == 0.0:
        return 0.0
    flat = np.asarray(w).reshape(-1)
    step = 1 << 22
    return sum(float(np.square(flat[i:i + step].astype(np.float64) / amax).sum())
               for i in range(0, flat.size, step))


def _candidates(params_flat: dict, shapes: set[tuple[int, int]]) -> dict[tuple[int, int], list]:
    """(N, K) -> [(energy, param, index)] for every parameter matrix of a shape the model uses."""
    out: dict[tuple[int, int], list] = defaultdict(list)
    for name, w in params_flat.items():
        view = matmul_view(name, np.shape(w))
        if view is None or (view.n, view.k) not in shapes:
            continue
        for index in np.ndindex(*view.lead_shape):
            out[(view.n, view.k)].append((_energy(np.asarray(w[index])), name, index))
    return out


def _match(stored: np.ndarray, cands: list, params_flat: dict) -> tuple[str, tuple] | None:
    """(param, index) of the parameter matrix that `stored` [N, K] is exactly, or None."""
    if not cands:
        return None
    energy = _energy(stored)
    _, name, index = min(cands, key=lambda c: abs(c[0] - energy))  # the only plausible candidate
    return (name, index) if np.array_equal(stored, _matrix_kn(name, params_flat[name], index).T) else None


def _tflite_scheme(scheme: Scheme | None) -> Scheme | None:
    """TFLite's block-wise format stores float16 scales: float32 ones are rounded up to float16."""
    if scheme is None or scheme.block is None or scheme.scale_dtype != "float32":
        return scheme
    return replace(scheme, scale_dtype="float16")


def _quantizes_anything(recipe: Recipe | None) -> bool:
    return recipe is not None and any(scheme is not None for _, scheme in recipe.rules)


def plan_weights(float_buf: bytes, params: dict, recipe: Recipe | None, exact: bool = False
                 ) -> tuple[WeightPlan, ...]:
    """Every quantizable weight of a float flatbuffer: which parameter matrix it is and its scheme.

    A weight that is no parameter matrix is an error when the recipe quantizes
    anything (its scheme would be unknown); a float export just lists it as "?".
    """
    params_flat = flatten(params)
    ops = [w for w in weight_ops(float_buf) if w.op in QUANTIZABLE_OPS]
    cands = _candidates(params_flat, {w.values.shape for w in ops})
    plans, seen, by_buffer = [], {}, {}
    for w in ops:
        if w.buffer not in by_buffer:  # signatures sharing a weight share its buffer: match it once
            by_buffer[w.buffer] = _match(w.values, cands.get(w.values.shape, []), params_flat)
        match = by_buffer[w.buffer]
        if w.scope in seen:  # the same op name in two signatures: fine if it is the same weight
            if seen[w.scope] != (w.op, match):
                raise TFLiteExportError(f"two TFLite ops share the scope {w.scope!r}; cannot quantize them apart")
            continue
        seen[w.scope] = (w.op, match)
        if match is None:
            if _quantizes_anything(recipe):
                raise TFLiteExportError(f"TFLite weight of op {w.scope!r} with shape {list(w.values.shape)} "
                                        f"is not any parameter matrix")
            plans.append(WeightPlan(w.scope, w.op, "?", (), None))
            continue
        name, index = match
        scheme = None if recipe is None else recipe.scheme_for(name, np.shape(params_flat[name]))
        hessians = None if recipe is None else recipe.hessians
        plans.append(WeightPlan(w.scope, w.op, name, index, _tflite_scheme(scheme), exact, hessians))
    return tuple(plans)


# ---------------------------------------------------------------- ai-edge-quantizer

def _op_config(plan: WeightPlan) -> dict:
    granularity = "CHANNELWISE" if plan.scheme.block is None else f"BLOCKWISE_{plan.scheme.block}"
    weight_only = plan.mode == "weight_only"
    return {
        "weight_tensor_config": {"num_bits": plan.scheme.bits, "symmetric": True,
                                 "granularity": granularity, "dtype": "INT"},
        "compute_precision": "FLOAT" if weight_only else "INTEGER",
        "explicit_dequantize": weight_only,
    }


def aeq_recipe(plans: tuple[WeightPlan, ...]) -> list[dict]:
    """ai-edge-quantizer recipe: one rule per (op, config), matching the exact scopes of its ops."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    configs = {}
    for plan in plans:
        if plan.scheme is None:
            continue
        config = _op_config(plan)
        key = (plan.op, repr(config))
        groups[key].append(plan.scope)
        configs[key] = config
    return [{"regex": "^(?:" + "|".join(re.escape(s) for s in scopes) + ")$", "operation": op,
             "algorithm_key": "min_max_uniform_quantize", "op_config": configs[(op, cfg)]}
            for (op, cfg), scopes in groups.items()]


def _run_aeq(float_buf: bytes, recipe: list[dict]) -> bytearray:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(bytearray(float_buf), recipe)
    result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytearray(result.quantized_model)


# ---------------------------------------------------------------- reference codes into the file

def _pack_int4(q: np.ndarray) -> np.ndarray:
    """Signed 4-bit codes, two per byte, low nibble first (TFLite's INT4 layout)."""
    flat = q.reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return flat[0::2] | (flat[1::2] << 4)


def _write_codes(view: Flatbuffer, tensor: int, plan: WeightPlan, qt: QuantizedTensor) -> None:
    t = view.tensor(tensor)
    dtype = view.dtype(tensor)
    if dtype != f"int{plan.scheme.bits}" or tuple(t.ShapeAsNumpy()) != qt.q.shape:
        raise TFLiteExportError(f"ai-edge-quantizer left {plan.label} (op {plan.scope!r}) as {dtype} "
                                f"{list(t.ShapeAsNumpy())}, expected int{plan.scheme.bits} {list(qt.q.shape)}")
    codes = _pack_int4(qt.q) if plan.scheme.bits == 4 else qt.q.reshape(-1).view(np.uint8)
    view.data_view(tensor)[:] = codes
    blockwise = view.blockwise_scales(tensor)
    if blockwise is not None:
        half = qt.scales.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), qt.scales):
            raise TFLiteExportError(f"{plan.label}: {plan.scheme.label} scales are not float16 values")
        view.data_view(blockwise).view(np.float16)[:] = half.reshape(-1)
    else:
        q = t.Quantization()
        if q.QuantizedDimension() != 0 or q.ScaleLength() != qt.scales.shape[0]:
            raise TFLiteExportError(f"{plan.label}: ai-edge-quantizer did not quantize per output channel")
        q.ScaleAsNumpy()[:] = qt.scales[:, 0]


def write_reference_codes(quant_buf: bytearray, plans: tuple[WeightPlan, ...], params: dict) -> None:
    """Overwrite every quantized weight's codes and scales with the numpy reference's, in place."""
    params_flat = flatten(params)
    by_scope = {p.scope: p for p in plans if p.scheme is not None}
    done, codes = set(), {}
    for view in subgraphs(quant_buf):
        for op in view.ops():
            plan = by_scope.get(view.scope(op))
            if plan is None or view.op_name(op) != plan.op:
                continue
            tensor, _ = view.weight_source(op)  # planned ops always have a constant weight
            key = (plan.param, plan.index, plan.scheme)  # signatures sharing a weight: quantized once
            if key not in codes:
                codes[key] = plan.quantized(params_flat)
            _write_codes(view, tensor, plan, codes[key])  # each tensor keeps its own per-channel scales
            done.add(plan.scope)
    missing = sorted(set(by_scope) - done)
    if missing:
        raise TFLiteExportError(f"quantized model lost the ops {missing[:3]} ({len(missing)} in all)")


def quantize_flatbuffer(float_buf: bytes, plans: tuple[WeightPlan, ...], params: dict) -> bytes:
    """The float flatbuffer with every planned weight stored as the reference's int8 / int4 codes."""
    recipe = aeq_recipe(plans)
    if not recipe:
        return float_buf
    quant_buf = _run_aeq(float_buf, recipe)
    write_reference_codes(quant_buf, plans, params)
    return bytes(quant_buf)
