"""`Part` -> float TFLite flatbuffer: jax2tf with the weights as constants, builtin ops only.

The model is traced once into a jaxpr and re-evaluated under jax2tf with
three graph-level canonicalizations (no layer is re-implemented):

* every computation on weights alone (per-layer slices of the stacked
  big_vision arrays, einsum reshapes) is folded to a constant at trace time,
  so the TFLite converter sees `dot_general(x, CONST)` and lowers it to
  FULLY_CONNECTED instead of BATCH_MATMUL over `slice(const)`;
* a `dot_general(CONST, x)` (JAX puts the weight first for einsums such as
  "btd,kdh->bkth") is swapped to `dot_general(x, CONST)` plus a transpose,
  because the converter only turns matmuls with a constant right operand into
  FULLY_CONNECTED (where ai-edge-quantizer quantizes weights);
* each weight matmul's result passes an optimization barrier, so the
  converter cannot fold a following scalar MUL/DIV into the weight.

Each FULLY_CONNECTED weight is therefore exactly a parameter matrix, and the
tied embedding table is one constant shared by the lookup and the LM head.

The SavedModel signature key is the part's name and the input/output names
are its `TensorSpec` names, so the runtime calls
`interpreter.get_signature_runner(part.name)(**inputs)`.
"""

from __future__ import annotations

import tempfile
from typing import Callable, Sequence

import jax
import jax.extend.core as jex
import numpy as np

from pg2edge.errors import Pg2EdgeError
from pg2edge.export.split import Part
from pg2edge.jaxpr_eval import INLINE_PRIMITIVES, bind, eval_jaxpr


class TFLiteExportError(Pg2EdgeError):
    """A part cannot be converted, quantized or verified as TFLite."""


def _is_const(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _swapped_dot(lhs, rhs, params: dict):
    """`dot_general(lhs, rhs)` computed as `transpose(dot_general(rhs, lhs))` (no batch dims)."""
    (lc, rc), _ = params["dimension_numbers"]
    precision = params.get("precision")
    if isinstance(precision, tuple):
        precision = precision[::-1]
    out = jax.lax.dot_general(rhs, lhs, ((rc, lc), ((), ())), precision=precision,
                              preferred_element_type=params.get("preferred_element_type"))
    n_rhs_free = rhs.ndim - len(rc)
    n_lhs_free = lhs.ndim - len(lc)
    perm = tuple(range(n_rhs_free, n_rhs_free + n_lhs_free)) + tuple(range(n_rhs_free))
    return jax.lax.transpose(out, perm)


VARIABLE_MIN_SIZE = 1 << 16  # constants this large reach the converter as variables, smaller ones inline


class WeightTable:
    """The large constants a file's graphs multiply activations by, each stored once.

    jax2tf would inline them into the serialized StableHLO, which the converter
    then copies many times over (about 35x the weight bytes in all); passed as
    `tf.Variable`s they are frozen by the converter once (about 9x). Equal
    values (the same weight seen by several signatures, or the tied table
    seen by the lookup and the LM head) share one entry.
    """

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []
        self._by_key: dict[tuple, list[int]] = {}

    def add(self, value) -> int:
        arr = np.asarray(value)
        sample = arr.reshape(-1)[::max(1, arr.size // 4096)].astype(np.float64)
        key = (arr.shape, arr.dtype.str, float(sample.sum()), float(np.abs(sample).sum()))
        for i in self._by_key.get(key, []):
            if np.array_equal(self.values[i], arr):
                return i
        self.values.append(arr)
        self._by_key.setdefault(key, []).append(len(self.values) - 1)
        return len(self.values) - 1


class _Boundary:
    """Where a large constant meets an activation: recorded (first pass), or replaced by its variable (tracing)."""

    def __init__(self, table: WeightTable, uses: list[int], fed: Sequence | None = None):
        self.table, self.uses, self.fed, self._next = table, uses, fed, 0

    def take(self, value):
        if np.size(value) < VARIABLE_MIN_SIZE:
            return value
        if self.fed is None:
            self.uses.append(self.table.add(value))
            return value
        index = self.uses[self._next]
        self._next += 1
        return self.fed[index]


def _eval_eqn(eqn: jex.JaxprEqn, invals: list, boundary: _Boundary) -> list:
    """Bind one equation, inlining nested jits and putting a constant matmul operand on the right."""
    if eqn.primitive.name in INLINE_PRIMITIVES:
        closed = eqn.params["jaxpr"]
        return _eval_jaxpr(closed.jaxpr, closed.consts, invals, boundary)
    const = [_is_const(x) for x in invals]
    if not all(const):  # weights meet activations here: large weights come in as variables
        invals = [boundary.take(x) if c else x for x, c in zip(invals, const)]
        if eqn.primitive.name == "dot_general" and sum(const) == 1:
            return [_eval_matmul(eqn, *invals, lhs_is_weight=const[0])]
    return bind(eqn, invals)


def _eval_matmul(eqn: jex.JaxprEqn, lhs, rhs, lhs_is_weight: bool) -> jax.Array:
    """A weight matmul with the weight on the right, fenced off from the ops that consume it.

    The barrier stops the converter folding a following scalar MUL/DIV (the LM
    head's soft-cap) into the weight: that fold changes the weight's values and
    fails outright once the weight exceeds TF's constant-folding size limit.
    """
    (_, (lhs_batch, _)) = eqn.params["dimension_numbers"]
    if lhs_is_weight and not lhs_batch:
        out = _swapped_dot(lhs, rhs, eqn.params)
    else:
        out = eqn.primitive.bind(lhs, rhs, **eqn.primitive.get_bind_params(eqn.params))
    return jax.lax.optimization_barrier(out)


def _eval_jaxpr(jaxpr: jex.Jaxpr, consts: Sequence, args: Sequence, boundary: _Boundary) -> list:
    """`jax.core.eval_jaxpr` with `_eval_eqn`'s rewrites."""
    return eval_jaxpr(jaxpr, consts, args, lambda eqn, vals: _eval_eqn(eqn, vals, boundary))


def bind_weights(part: Part, params: dict, table: WeightTable) -> tuple[Callable[..., tuple], list[int]]:
    """`part.fn` with `params` bound: work on weights alone runs eagerly while jax2tf traces.

    Returns `fn(weights, *inputs)`, where `weights` are the `table` entries
    (added to it here) in order, and the indices this part uses.
    """
    specs = [jax.ShapeDtypeStruct(s.shape, np.dtype(s.dtype)) for s in part.inputs]
    closed = jax.make_jaxpr(lambda *xs: part.fn(params, *xs))(*specs)
    uses: list[int] = []

    def fn(weights, *inputs):
        with jax.ensure_compile_time_eval():
            return tuple(_eval_jaxpr(closed.jaxpr, closed.consts, inputs, _Boundary(table, uses, weights)))

    with jax.ensure_compile_time_eval():  # first pass: which constants meet activations, in what order
        jax.make_jaxpr(lambda *xs: _eval_jaxpr(closed.jaxpr, closed.consts, xs, _Boundary(table, uses)))(*specs)
    return fn, uses


def _tf_function(part: Part, fn: Callable[..., tuple], variables: list):
    """One tf.function that takes and returns the part's named tensors, reading weights from `variables`."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    tf_fn = jax2tf.convert(fn, with_gradient=False)
    names = [s.name for s in part.outputs]

    def named(*inputs):
        outs = tf_fn(list(variables), *inputs)
        return {n: o for n, o in zip(names, outs)}

    signature = [tf.TensorSpec(s.shape, tf.dtypes.as_dtype(s.dtype), name=s.name) for s in part.inputs]
    return tf.function(named, input_signature=signature, autograph=False)


def as_parts(parts: Part | Sequence[Part]) -> tuple[Part, ...]:
    """One part or several (the signatures of one file)."""
    return (parts,) if isinstance(parts, Part) else tuple(parts)


def convert_float(parts: Part | Sequence[Part], params: dict) -> bytes:
    """The parts as one float32 TFLite flatbuffer with a signature per part (named `part.name`).

    The signatures share their weights: every large constant is one
    `tf.Variable` of the module, which the converter freezes into one buffer.
    """
    import tensorflow as tf

    parts = as_parts(parts)
    table = WeightTable()
    bound = [bind_weights(part, params, table) for part in parts]
    module = tf.Module()
    module.weights_ = [tf.Variable(v, trainable=False, name=f"w{i}") for i, v in enumerate(table.values)]
    del table
    signatures = {}
    for i, (part, (fn, uses)) in enumerate(zip(parts, bound)):
        tf_fn = _tf_function(part, _indexed(fn, uses), [module.weights_[j] for j in sorted(set(uses))])
        setattr(module, f"signature_{i}", tf_fn)
        signatures[part.name] = tf_fn.get_concrete_function()
    names = ", ".join(p.name for p in parts)
    with tempfile.TemporaryDirectory(prefix="pg2edge-tflite-") as saved:
        tf.saved_model.save(module, saved, signatures=signatures)
        del module, signatures, bound
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[p.name for p in parts])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        # no per-channel MUL folded into FULLY_CONNECTED weights: they must stay parameter matrices
        # (up to a folded scalar, e.g. the LM head's soft-cap 1/30) to be mapped and quantized exactly
        converter._experimental_disable_fuse_mul_and_fc = True
        try:
            return bytes(converter.convert())
        except Exception as e:  # the converter raises many types; report the part
            raise TFLiteExportError(f"TFLite conversion of {names} failed: {e}") from e


def _indexed(fn: Callable[..., tuple], uses: list[int]) -> Callable[..., tuple]:
    """`fn(all_weights, ...)` called with only the weights a part uses (in sorted table order)."""
    order = sorted(set(uses))

    def call(weights, *inputs):
        full = dict(zip(order, weights))
        return fn(full, *inputs)

    return call
