"""Output error of each quantized weight on a calibration batch, measured inside the real model graph.

The relative weight error says how far the codes are from the weight; what a
user cares about is how far each matmul's *output* moves. Here the model's
own function is traced once to a jaxpr and evaluated on the calibration
inputs with the float and the fake-quantized weights side by side: every
value computed from weights alone is carried as a (float, quantized) pair,
and at every matmul of an activation with such a weight both products are
taken with the same float activation. So each weight's error is measured in
isolation (no upstream quantization noise) and on the inputs it really sees,
without re-implementing a layer.

    output_rel_error(param) = ||X W_q - X W|| / ||X W||, summed over every
    matmul the parameter feeds (all layers of a stacked weight) and the batch.

The same evaluation collects GPTQ's Hessians (`input_hessians`): the X^T X of
every weight matmul's float inputs, filed under the weight it multiplied.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Sequence

import jax
import jax.extend.core as jex
import numpy as np

from pg2edge.jaxpr_eval import INLINE_PRIMITIVES, bind, eval_jaxpr
from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize.gptq import Hessians
from pg2edge.quantize.recipes import Recipe, fake_quant_params


class _Weight:
    """A value computed from parameters alone: float and fake-quantized versions, and which params it came from."""

    __slots__ = ("f", "q", "sources")

    def __init__(self, f, q, sources: frozenset[str]):
        self.f, self.q, self.sources = f, q, sources


class _Tally:
    """Squared output error and squared output norm per parameter name."""

    def __init__(self) -> None:
        self.err2: dict[str, float] = defaultdict(float)
        self.norm2: dict[str, float] = defaultdict(float)

    def add(self, name: str, y: jax.Array, y_q: jax.Array) -> None:
        y64 = np.asarray(y, np.float64)
        diff = np.asarray(y_q, np.float64) - y64
        self.err2[name] += float(np.vdot(diff, diff))
        self.norm2[name] += float(np.vdot(y64, y64))

    def relative(self) -> dict[str, float]:
        return {n: math.sqrt(self.err2[n] / self.norm2[n]) if self.norm2[n] else 0.0 for n in self.err2}


MatmulHook = Callable[[jex.JaxprEqn, list, int, list], None]  # (dot_general, inputs, weight's index, float outputs)


def _eval(jaxpr: jex.Jaxpr, consts: Sequence, args: Sequence, on_matmul: MatmulHook) -> list:
    """Evaluate `jaxpr`, carrying `_Weight` pairs for weight-only values; `on_matmul` sees every weight matmul."""

    def rule(eqn: jex.JaxprEqn, vals: list) -> list:
        if eqn.primitive.name in INLINE_PRIMITIVES:
            closed = eqn.params["jaxpr"]
            return _eval(closed.jaxpr, closed.consts, vals, on_matmul)
        if any(isinstance(x, _Weight) for x in vals):
            return _eval_weighted(eqn, vals, on_matmul)
        return bind(eqn, vals)

    return eval_jaxpr(jaxpr, consts, args, rule)


def _eval_weighted(eqn: jex.JaxprEqn, vals: list, on_matmul: MatmulHook) -> list:
    """An equation with a weight-derived input: a weight matmul, or more work on weights alone."""
    weights = [x for x in vals if isinstance(x, _Weight)]
    if len(weights) == len(vals) or (eqn.primitive.name != "dot_general" and
                                     all(isinstance(x, _Weight) or np.ndim(x) == 0 for x in vals)):
        # still weights only (a layer slice, a reshape, 1 + scale): keep both versions
        f = bind(eqn, [x.f if isinstance(x, _Weight) else x for x in vals])
        q = bind(eqn, [x.q if isinstance(x, _Weight) else x for x in vals])
        sources = frozenset().union(*(w.sources for w in weights))
        return [_Weight(a, b, sources) for a, b in zip(f, q)]
    y = bind(eqn, [x.f if isinstance(x, _Weight) else x for x in vals])  # activations continue in float
    if eqn.primitive.name == "dot_general" and len(weights) == 1 and len(weights[0].sources) == 1:
        on_matmul(eqn, vals, next(i for i, x in enumerate(vals) if isinstance(x, _Weight)), y)
    return y


def _tally_matmul(tally: _Tally) -> MatmulHook:
    def on_matmul(eqn: jex.JaxprEqn, vals: list, w_at: int, y: list) -> None:
        y_q = bind(eqn, [x.q if isinstance(x, _Weight) else x for x in vals])
        tally.add(next(iter(vals[w_at].sources)), y[0], y_q[0])
    return on_matmul


def output_errors(fn: Callable, params: dict, recipe: Recipe, batches: Sequence[Sequence[np.ndarray]]
                  ) -> dict[str, float]:
    """{param name: relative output error} of `fn(params, *batch)`'s weight matmuls under `recipe`, over all batches.

    Only parameters the recipe quantizes and that feed a matmul with an
    activation appear (an embedding lookup is a gather, not a matmul; a tied
    table is measured through the LM head).
    """
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
    quant = fake_quant_params(flat, recipe)
    changed = {k for k in flat if quant[k] is not flat[k]}
    names = sorted(flat)
    closed = jax.make_jaxpr(lambda p, *xs: fn(unflatten(p), *xs))(dict(zip(names, (flat[n] for n in names))),
                                                                  *batches[0])
    leaves = [_Weight(flat[n], quant[n], frozenset([n])) for n in names]  # dict leaves come sorted by key
    tally = _Tally()
    with jax.ensure_compile_time_eval():
        for batch in batches:
            _eval(closed.jaxpr, closed.consts, leaves + [np.asarray(x) for x in batch], _tally_matmul(tally))
    return {n: e for n, e in tally.relative().items() if n in changed}


def annotate_output_errors(rows: list[dict], errors: dict[str, float]) -> list[dict]:
    """Add `output_rel_error` to the report rows it was measured for (the report shows the column)."""
    for row in rows:
        if row["name"] in errors:
            row["output_rel_error"] = errors[row["name"]]
    return rows


def _as_matmul(eqn: jex.JaxprEqn, vals: list, w_at: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight [K, N], activation rows [R, K]) of a dot_general without batch dims, K in the same order.

    Columns are what `Hessians` files weights by, so K must be flattened as exporters flatten it: contracted
    dims in the weight's storage order (an einsum may contract them in another).
    """
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
        return None
    w, x = np.asarray(vals[w_at].f, np.float32), np.asarray(vals[1 - w_at], np.float32)
    cw, cx = (lc, rc) if w_at == 0 else (rc, lc)
    cw, cx = zip(*sorted(zip(cw, cx)))  # K in the weight's storage order, as `matmul_view` flattens it
    w_free = [d for d in range(w.ndim) if d not in cw]
    x_free = [d for d in range(x.ndim) if d not in cx]
    k = int(np.prod([w.shape[d] for d in cw]))
    return (np.transpose(w, (*cw, *w_free)).reshape(k, -1), np.transpose(x, (*x_free, *cx)).reshape(-1, k))


def input_hessians(fn: Callable, params: dict, batches: Sequence[Sequence[np.ndarray]],
                   include: Callable[[str], bool]) -> Hessians:
    """The Hessians X^T X of every matmul of `fn(params, *batch)` whose weight is a param `include` accepts.

    Batches may differ in shape (one calibration example each, unpadded): the
    function is traced once per distinct shape.
    """
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
    names = sorted(flat)
    leaves = [_Weight(flat[n], flat[n], frozenset([n])) for n in names]
    hessians = Hessians()

    def on_matmul(eqn: jex.JaxprEqn, vals: list, w_at: int, y: list) -> None:
        if include(next(iter(vals[w_at].sources))):
            pair = _as_matmul(eqn, vals, w_at)
            if pair is not None:
                hessians.add(*pair)

    traced: dict = {}
    with jax.ensure_compile_time_eval():
        for batch in batches:
            key = tuple((np.shape(x), np.asarray(x).dtype.str) for x in batch)
            if key not in traced:
                traced[key] = jax.make_jaxpr(lambda p, *xs: fn(unflatten(p), *xs))(
                    dict(zip(names, (flat[n] for n in names))), *batch)
            closed = traced[key]
            _eval(closed.jaxpr, closed.consts, leaves + [np.asarray(x) for x in batch], on_matmul)
    return hessians
