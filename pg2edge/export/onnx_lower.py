"""Lower a traced JAX function (its jaxpr) to ONNX nodes, folding everything weight-only.

The exporters never re-implement a layer: they trace `Part.fn` and this module
translates the primitives one by one. Values that depend only on the weights
(layer slices, transposes, casts, iota-built tables) are folded in numpy and
stay `Const`; a matmul or gather whose weight operand is `Const` is handed to a
`WeightSink`, which decides how the weight is stored (float initializer or a
quantized kernel such as `MatMulNBits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from jax.extend import core as jcore
from onnx import helper

from pg2edge.checkpoint.lazy import Lazy
from pg2edge.export.onnx_dims import dim_product, static_shape
from pg2edge.export.onnx_graph import (NP_TO_ONNX, Bcast, Const, Dyn, GraphBuilder,  # noqa: F401 (re-exported)
                                       WeightFile, WeightSink, weight_key)
from pg2edge.export.onnx_kernels import KERNELS
from pg2edge.export.weight_views import VIEW_OPS, broadcast_view, frozen_params, view

_ELEMENTWISE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
                "exp": "Exp", "tanh": "Tanh", "sin": "Sin", "cos": "Cos", "sqrt": "Sqrt", "neg": "Neg",
                "log": "Log", "abs": "Abs", "logistic": "Sigmoid", "pow": "Pow", "erf": "Erf",
                "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal",
                "and": "And", "or": "Or", "not": "Not"}
_IDENTITY = {"stop_gradient", "copy", "copy_p", "optimization_barrier"}
_CALLS = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat"}


class Lowering:
    """Walks a jaxpr, folding constants and emitting ONNX nodes for runtime values."""

    def __init__(self, g: GraphBuilder, sink: WeightSink):
        self.g, self.sink = g, sink
        self._pending: list[_PendingMatmul] = []
        self._pending_names: set[str] = set()
        self._depth = 0

    # -- values -------------------------------------------------------------
    def materialize(self, v: Const | Dyn | Bcast, broadcasting: bool = False) -> str:
        """An ONNX tensor name for `v` (constants become initializers).

        For ops with ONNX broadcasting, a broadcast constant (numpy stride-0
        view, e.g. a -inf fill for masked attention logits) is stored compact.
        """
        if isinstance(v, Dyn):
            return v.name
        if isinstance(v, Bcast):
            compact = self.g.const(np.ascontiguousarray(v.compact), "c")
            return compact if broadcasting else self.g.op("Expand", [compact, self.g.shape_const(v.shape)])
        value = v.array()
        if broadcasting and 0 in value.strides:
            value = value[tuple(slice(0, 1) if st == 0 else slice(None) for st in value.strides)]
        return self.g.const(np.ascontiguousarray(value), (v.param or "c"))

    def run(self, jaxpr: jcore.Jaxpr, consts: list, args: list) -> list:
        """Lower every equation; values are dropped after their last use (bounded memory)."""
        env: dict = {}
        last_use: dict = {}
        for i, eqn in enumerate(jaxpr.eqns):
            for a in eqn.invars:
                if not isinstance(a, jcore.Literal):
                    last_use[a] = i
        keep = {a for a in jaxpr.outvars if not isinstance(a, jcore.Literal)}

        def read(a):
            return Const(np.asarray(a.val)) if isinstance(a, jcore.Literal) else env[a]

        for var, val in zip(jaxpr.constvars, consts):
            env[var] = val if isinstance(val, (Const, Dyn)) else Const(np.asarray(val))
        for var, val in zip(jaxpr.invars, args):
            env[var] = val
        self._depth += 1
        for i, eqn in enumerate(jaxpr.eqns):
            ins = [read(a) for a in eqn.invars]
            if self._pending and any(isinstance(v, Dyn) and v.name in self._pending_names for v in ins):
                self.flush_matmuls()
            outs = self.eqn(eqn, ins)
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
            for a in eqn.invars:
                if not isinstance(a, jcore.Literal) and last_use.get(a) == i and a not in keep:
                    env.pop(a, None)
        self._depth -= 1
        if self._depth == 0:
            self.flush_matmuls()
        return [read(a) for a in jaxpr.outvars]

    def flush_matmuls(self) -> None:
        """Emit pending weight matmuls; those sharing an input and a fuse key become one call + Split.

        (q/k/v and gate/up each read the same normed activations: one quantized
        kernel call over the concatenated weight reads the input once and runs
        a larger, faster matmul.) Nodes are inserted where the first matmul of
        each group was traced, so the graph stays topologically ordered.
        """
        groups: dict = {}
        for p in self._pending:
            groups.setdefault((p.x.name, self.sink.fuse_key(p.w_kn, p.param), p.w_kn.shape[0]), []).append(p)
        self._pending, self._pending_names = [], set()
        for members in sorted(groups.values(), key=lambda ms: -ms[0].at):
            start = len(self.g.nodes)
            if len(members) == 1:
                p = members[0]
                y = self.sink.matmul(self.g, p.x, p.w_kn, p.param, p.key)
                self.g.nodes.append(helper.make_node("Identity", [y], [p.out]))
            else:
                y = self.sink.matmul(self.g, members[0].x, _concat_columns([p.w_kn for p in members]),
                                     members[0].param, _fused_key([p.key for p in members]))
                sizes = self.g.const(np.array([p.w_kn.shape[1] for p in members], np.int64), "split")
                self.g.nodes.append(helper.make_node("Split", [y, sizes], [p.out for p in members], axis=-1))
            emitted = self.g.nodes[start:]
            del self.g.nodes[start:]
            self.g.nodes[members[0].at:members[0].at] = emitted

    def eqn(self, eqn, ins: list) -> list:
        name = eqn.primitive.name
        if name in _CALLS and eqn.params.get("name") in KERNELS and not all(isinstance(v, Const) for v in ins):
            out = KERNELS[eqn.params["name"]](self.g, self.materialize, ins)
            if out is not None:
                names = [out] if isinstance(out, str) else out
                return [Dyn(n, tuple(v.aval.shape), np.dtype(v.aval.dtype)) for n, v in zip(names, eqn.outvars)]
        if name in _CALLS:
            sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
            closed = sub if hasattr(sub, "consts") else jcore.ClosedJaxpr(sub, ())
            return self.run(closed.jaxpr, list(closed.consts), ins)
        if name == "dim_as_value":  # a symbolic dimension used as a value (e.g. a slice start)
            aval = eqn.outvars[0].aval
            value = self.g.op("Squeeze", [self.g.dim(eqn.params["dim"])], "dim_value")
            return [Dyn(self.g.op("Cast", [value], to=NP_TO_ONNX[np.dtype(aval.dtype)]), (), np.dtype(aval.dtype))]
        if all(isinstance(v, Const) for v in ins):
            if not all(static_shape(v.aval.shape) for v in eqn.outvars):
                return [self.symbolic_const(eqn, ins)]
            return self.fold(eqn, ins)
        if not any(isinstance(v, Dyn) for v in ins):  # Bcast and Const only: one operand at full shape
            i = next(i for i, v in enumerate(ins) if isinstance(v, Bcast))
            ins = ins[:i] + [Dyn(self.materialize(ins[i]), ins[i].shape, ins[i].dtype)] + ins[i + 1:]
        if name == "dot_general":
            return [self.dot_general(eqn, *ins)]
        if name == "gather":
            return [self.gather(eqn, *ins)]
        handler = getattr(self, f"p_{name}", None)
        aval = eqn.outvars[0].aval
        if handler is not None:
            out = handler(eqn, ins)
        elif name in _ELEMENTWISE:
            out = self.g.op(_ELEMENTWISE[name], [self.materialize(v, broadcasting=True) for v in ins])
        elif name in _IDENTITY:
            return ins
        else:
            raise NotImplementedError(f"ONNX lowering: primitive {name!r} is not supported "
                                      f"(params {sorted(eqn.params)})")
        return [Dyn(out, tuple(aval.shape), np.dtype(aval.dtype))]

    def symbolic_const(self, eqn, ins: list[Const]) -> Dyn | Bcast:
        """A weight-free value of symbolic shape: an index range (Range) or a broadcast constant (Bcast)."""
        name, p = eqn.primitive.name, eqn.params
        shape = tuple(eqn.outvars[0].aval.shape)
        if name == "broadcast_in_dim":
            ranked = [1] * len(shape)
            for s, d in zip(np.shape(ins[0].array()), p["broadcast_dimensions"]):
                ranked[d] = s
            return Bcast(np.asarray(ins[0].array()).reshape(ranked), shape)
        if name == "iota":
            dtype, axis = np.dtype(p["dtype"]), p["dimension"]
            zero, one = (self.g.const(np.asarray(v, np.int64), "range") for v in (0, 1))
            limit = self.g.op("Squeeze", [self.g.dim(shape[axis])], "range")
            idx = self.g.op("Cast", [self.g.op("Range", [zero, limit, one])], to=NP_TO_ONNX[dtype])
            ranked = [1] * len(shape)
            ranked[axis] = shape[axis]
            out = self.g.reshape(idx, ranked) if len(shape) > 1 else idx
            if list(ranked) != list(shape):
                out = self.g.op("Expand", [out, self.g.shape_const(shape)])
            return Dyn(out, shape, dtype)
        raise NotImplementedError(f"ONNX lowering: constant {name!r} of symbolic shape {shape}")

    def fold(self, eqn, ins: list[Const]) -> list[Const]:
        """Evaluate a weight-only equation; shape ops on weights stay lazy views (no copies)."""
        name, p = eqn.primitive.name, eqn.params
        x = ins[0] if ins else None
        if name == "convert_element_type" and np.dtype(x.value.dtype) == np.dtype(p["new_dtype"]):
            return ins
        if name == "broadcast_in_dim" and not isinstance(x.value, Lazy):
            return [Const(broadcast_view(x.value, p["shape"], p["broadcast_dimensions"]), x.param)]
        if name in VIEW_OPS and (name != "slice" or not p["strides"]):
            aval = eqn.outvars[0].aval
            path = None if x.path is None else x.path + ((name, frozen_params(p)),)
            return [Const(view(x.value, name, p, tuple(aval.shape)), x.param, path)]
        with jax.default_device(jax.devices("cpu")[0]):
            outs = eqn.primitive.bind(*[v.array() for v in ins], **p)
        outs = outs if eqn.primitive.multiple_results else [outs]
        param = next((v.param for v in ins if v.param), None)
        return [Const(np.asarray(o), param) for o in outs]

    # -- matmuls and gathers --------------------------------------------------
    def dot_general(self, eqn, lhs, rhs) -> Dyn:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        aval = eqn.outvars[0].aval
        out_shape, out_dtype = tuple(aval.shape), np.dtype(aval.dtype)
        if isinstance(rhs, Const) and not rb:
            return Dyn(self._weight_matmul(lhs, lc, rhs, rc, out_shape), out_shape, out_dtype)
        if isinstance(lhs, Const) and not lb:
            # out = (lhs_free..., rhs_free...) -> compute rhs-major then transpose back
            swapped = self._weight_matmul(rhs, rc, lhs, lc, None)
            n_r, n_l = len(rhs.shape) - len(rc), len(lhs.value.shape) - len(lc)
            perm = list(range(n_r, n_r + n_l)) + list(range(n_r))
            return Dyn(self.g.transpose(swapped, perm), out_shape, out_dtype)
        return Dyn(self._batched_matmul(lhs, rhs, lc, rc, lb, rb, out_shape), out_shape, out_dtype)

    def _weight_matmul(self, x: Dyn, xc, w: Const, wc, out_shape) -> str:
        """x (runtime) contracted with a constant weight: move contraction last, call the sink.

        K is flattened in the weight's stored axis order, which is the order
        quantization blocks run in (`pg2edge.quantize.matmul_view`).
        """
        wc, xc = zip(*sorted(zip(wc, xc)))
        x_free = [d for d in range(len(x.shape)) if d not in xc]
        w_free = [d for d in range(w.value.ndim) if d not in wc]
        k = int(np.prod([x.shape[d] for d in xc]))
        x2 = self.g.transpose(x.name, x_free + list(xc))
        lead = [x.shape[d] for d in x_free]
        if len(xc) != 1:
            x2 = self.g.reshape(x2, lead + [k])
        key = weight_key(w, tuple(wc))
        n = int(np.prod([w.value.shape[d] for d in w_free]))
        w_kn = Lazy((k, n), w.value.dtype, lambda: np.transpose(w.array(), list(wc) + w_free).reshape(k, n))
        y = self.g.fresh("mm")
        self._pending.append(_PendingMatmul(Dyn(x2, tuple(lead + [k]), x.dtype), w_kn, w.param, key, y,
                                            len(self.g.nodes)))
        full = lead + [w.value.shape[d] for d in w_free]
        out = y if len(w_free) == 1 else self.g.reshape(y, full)
        self._pending_names.update((y, out))
        return out

    def _batched_matmul(self, lhs, rhs, lc, rc, lb, rb, out_shape) -> str:
        """Both operands at runtime: (batch, M, K) @ (batch, K, N) with ONNX MatMul."""
        lshape = lhs.shape if isinstance(lhs, Dyn) else lhs.value.shape
        rshape = rhs.shape if isinstance(rhs, Dyn) else rhs.value.shape
        lf = [d for d in range(len(lshape)) if d not in lc and d not in lb]
        rf = [d for d in range(len(rshape)) if d not in rc and d not in rb]
        batch = [lshape[d] for d in lb]
        m, k = dim_product(lshape[d] for d in lf), dim_product(lshape[d] for d in lc)
        n = dim_product(rshape[d] for d in rf)
        a_perm, b_perm = list(lb) + lf + list(lc), list(rb) + list(rc) + rf
        a = self._reshape_known(self.g.transpose(self.materialize(lhs), a_perm), [lshape[d] for d in a_perm],
                                batch + [m, k])
        b = self._reshape_known(self.g.transpose(self.materialize(rhs), b_perm), [rshape[d] for d in b_perm],
                                batch + [k, n])
        return self._reshape_known(self.g.op("MatMul", [a, b]), batch + [m, n], list(out_shape))

    def _reshape_known(self, x: str, shape: list, target: list) -> str:
        """Reshape only when the shape changes: a no-op Reshape of a symbolic shape cannot be removed by
        onnxruntime, and it would keep a Transpose from fusing into its MatMul (FusedMatMul)."""
        return x if len(shape) == len(target) and all(a == b for a, b in zip(shape, target)) else \
            self.g.reshape(x, target)

    def gather(self, eqn, operand, indices) -> Dyn:
        dn = eqn.params["dimension_numbers"]
        aval = eqn.outvars[0].aval
        if isinstance(operand, Dyn):
            return self._slice_gather(eqn, operand, indices)
        is_row_lookup = (isinstance(operand, Const) and len(operand.value.shape) == 2
                         and dn.collapsed_slice_dims == (0,) and dn.start_index_map == (0,)
                         and tuple(eqn.params["slice_sizes"]) == (1, operand.value.shape[1]))
        if not is_row_lookup:
            raise NotImplementedError(f"ONNX lowering: only row lookups in a constant table are supported, "
                                      f"found gather with {dn}")
        ids_shape = tuple(indices.shape[:-1])
        ids = Dyn(self.g.reshape(self.materialize(indices), list(ids_shape)), ids_shape, indices.dtype)
        return Dyn(self.sink.gather(self.g, operand, ids), tuple(aval.shape), np.dtype(aval.dtype))

    def _slice_gather(self, eqn, operand: Dyn, indices) -> Dyn:
        """A gather that is a slice along one axis (jax's indexing under symbolic shapes), its start a
        constant or a runtime scalar (a symbolic dimension's value)."""
        dn, sizes = eqn.params["dimension_numbers"], tuple(eqn.params["slice_sizes"])
        rank = len(operand.shape)
        axis = dn.start_index_map[0] if len(dn.start_index_map) == 1 else None
        if not (isinstance(indices, (Const, Dyn)) and axis is not None and dn.collapsed_slice_dims == ()
                and tuple(dn.offset_dims) == tuple(range(rank)) and not dn.operand_batching_dims
                and all(sizes[d] == operand.shape[d] for d in range(rank) if d != axis)):
            raise NotImplementedError(f"ONNX lowering: only one-axis slices of a runtime value are "
                                      f"supported as gather, found {dn} with slice sizes {sizes}")
        if isinstance(indices, Const):
            start = int(indices.array().reshape(-1)[0])
            begin = self.g.const(np.asarray([start], np.int64), "slice")
            end = self.g.shape_const([start + sizes[axis]])
        else:
            begin = self.g.op("Cast", [self.g.reshape(indices.name, [1])], "slice", to=NP_TO_ONNX[np.dtype(np.int64)])
            end = self.g.op("Add", [begin, self.g.shape_const([sizes[axis]])], "slice")
        axes = self.g.const(np.asarray([axis], np.int64), "slice")
        aval = eqn.outvars[0].aval
        return Dyn(self.g.op("Slice", [operand.name, begin, end, axes]), tuple(aval.shape), np.dtype(aval.dtype))

    # -- the remaining primitives ---------------------------------------------
    def p_integer_pow(self, eqn, ins):
        x, y = self.materialize(ins[0]), eqn.params["y"]
        if y not in (2, 3):
            return self.g.op("Pow", [x, self.g.const(np.asarray(y, ins[0].dtype))])
        sq = self.g.op("Mul", [x, x])
        return sq if y == 2 else self.g.op("Mul", [sq, x])

    def p_square(self, eqn, ins):
        x = self.materialize(ins[0])
        return self.g.op("Mul", [x, x])

    def p_rsqrt(self, eqn, ins):
        return self.g.op("Reciprocal", [self.g.op("Sqrt", [self.materialize(ins[0])])])

    def p_reduce_sum(self, eqn, ins):
        axes = self.g.const(np.asarray(eqn.params["axes"], np.int64), "axes")
        return self.g.op("ReduceSum", [self.materialize(ins[0]), axes], keepdims=0)

    def p_reduce_max(self, eqn, ins):
        axes = self.g.const(np.asarray(eqn.params["axes"], np.int64), "axes")
        return self.g.op("ReduceMax", [self.materialize(ins[0]), axes], keepdims=0)

    def p_broadcast_in_dim(self, eqn, ins):
        shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
        src = ins[0]
        src_shape = src.shape if isinstance(src, Dyn) else src.value.shape
        ranked = [1] * len(shape)
        for s, d in zip(src_shape, dims):
            ranked[d] = s
        x = self.g.reshape(self.materialize(src), ranked)
        return x if list(ranked) == list(shape) else self.g.op("Expand", [x, self.g.shape_const(shape)])

    def _to_shape(self, eqn, ins):
        return self.g.reshape(self.materialize(ins[0]), eqn.outvars[0].aval.shape)

    p_reshape = p_squeeze = p_expand_dims = _to_shape

    def p_transpose(self, eqn, ins):
        return self.g.op("Transpose", [self.materialize(ins[0])], perm=list(eqn.params["permutation"]))

    def p_slice(self, eqn, ins):
        start, limit = eqn.params["start_indices"], eqn.params["limit_indices"]
        strides = eqn.params["strides"] or [1] * len(start)
        args = [np.asarray(a, np.int64) for a in (start, limit, range(len(start)), strides)]
        return self.g.op("Slice", [self.materialize(ins[0])] + [self.g.const(a, "slice") for a in args])

    def p_concatenate(self, eqn, ins):
        return self.g.op("Concat", [self.materialize(v) for v in ins], axis=eqn.params["dimension"])

    def p_convert_element_type(self, eqn, ins):
        to = np.dtype(eqn.params["new_dtype"])
        if isinstance(ins[0], Dyn) and ins[0].dtype == to:
            return ins[0].name
        return self.g.op("Cast", [self.materialize(ins[0])], to=NP_TO_ONNX[to])

    def p_select_n(self, eqn, ins):
        if len(ins) != 3:
            raise NotImplementedError("ONNX lowering: select_n with more than two cases")
        pred, on_false, on_true = (self.materialize(v, broadcasting=True) for v in ins)
        return self.g.op("Where", [pred, on_true, on_false])

    def p_ne(self, eqn, ins):
        return self.g.op("Not", [self.g.op("Equal", [self.materialize(v) for v in ins])])

    def p_clamp(self, eqn, ins):
        lo, x, hi = (self.materialize(v) for v in ins)
        return self.g.op("Min", [self.g.op("Max", [x, lo]), hi])


@dataclass(frozen=True)
class _PendingMatmul:
    """A traced `x @ w` not yet emitted: it may fuse with later matmuls on the same input."""

    x: Dyn
    w_kn: Lazy
    param: str | None
    key: tuple | None
    out: str
    at: int  # index in the node list where it belongs


def _concat_columns(weights: list[Lazy]) -> Lazy:
    """[K, N1] ++ [K, N2] ... along N, read only when the sink needs the bytes."""
    k = weights[0].shape[0]
    return Lazy((k, sum(w.shape[1] for w in weights)), weights[0].dtype,
                lambda: np.concatenate([w.materialize() for w in weights], axis=1))


def _fused_key(keys: list) -> tuple | None:
    return None if any(k is None for k in keys) else ("fused", *keys)
