"""Write graph-split `Part`s as ONNX models that onnxruntime runs.

Weights go through a `WeightSink`: float `MatMul`/`Gather` initializers, or the
quantized kernels chosen by the recipe (see `onnx_quant.py`). Every large
weight lives once in a shared external-data file, so each `.onnx` proto stays
small (no 2 GB protobuf limit) and prefill buckets share the decoder weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from pg2edge.checkpoint.lazy import Lazy
from pg2edge.export.onnx_lower import (NP_TO_ONNX, Const, Dyn, GraphBuilder, Lowering, WeightFile, WeightSink,
                                      weight_key)
from pg2edge.export.onnx_trace import trace
from pg2edge.export.split import Part

OPSET = 23  # RMSNormalization (23), Gelu (20): the model's named calls map onto them
MS_OPSET = 1


class FloatWeights:
    """Float32 weights as plain initializers."""

    def matmul(self, g: GraphBuilder, x: Dyn, w_kn: Lazy, param: str | None, key: tuple | None) -> str:
        return g.op("MatMul", [x.name, _stored_or(g, w_kn, param or "w", key)])

    def fuse_key(self, w_kn: Lazy, param: str | None) -> object:
        return "float"

    def gather(self, g: GraphBuilder, table: Const, ids: Dyn) -> str:
        rows = Lazy(table.value.shape, table.value.dtype, table.array)
        return g.op("Gather", [_stored_or(g, rows, table.param or "table", weight_key(table, "rows")), ids.name],
                    axis=0)


def _stored_or(g: GraphBuilder, value: Lazy, hint: str, key: tuple | None) -> str:
    """Reference a float weight already in the shared file, else read it once and store it."""
    if key is not None and g.weights is not None and key in g.weights:
        return g.const(None, hint, key)
    return g.const(value.materialize().astype(np.float32, copy=False), hint, key)


@dataclass(frozen=True)
class OnnxInfo:
    """What was written for one part: its .onnx file, byte size, op histogram (weights are shared)."""

    path: Path
    bytes: int
    ops: dict[str, int]


def build_model(part: Part, params: dict, sink: WeightSink | None = None,
                weights: WeightFile | None = None) -> onnx.ModelProto:
    """Trace `part.fn` with `params` bound and lower it to an ONNX ModelProto."""
    sink = sink or FloatWeights()
    closed, names, arrays = trace(part.fn, params, [(s.name, s.shape, s.dtype) for s in part.inputs])
    g = GraphBuilder(weights=weights)
    lowering = Lowering(g, sink)
    weight_args = [Const(a if isinstance(a, Lazy) else np.asarray(a), n, (n,)) for n, a in zip(names, arrays)]
    input_avals = closed.in_avals[len(names):]
    input_args = [Dyn(s.name, tuple(a.shape), np.dtype(s.dtype)) for s, a in zip(part.inputs, input_avals)]
    for s in part.inputs:
        for axis, d in enumerate(s.shape):
            if isinstance(d, str):
                g.read_dim(d, s.name, axis)
    outs = lowering.run(closed.jaxpr, list(closed.consts), weight_args + input_args)
    _name_outputs(g, [lowering.materialize(v) for v in outs], [s.name for s in part.outputs],
                  {s.name for s in part.inputs})
    graph = helper.make_graph(
        g.nodes, part.name,
        [helper.make_tensor_value_info(s.name, NP_TO_ONNX[np.dtype(s.dtype)], s.shape) for s in part.inputs],
        [helper.make_tensor_value_info(s.name, NP_TO_ONNX[np.dtype(s.dtype)], s.shape) for s in part.outputs],
        initializer=g.initializers)
    model = helper.make_model(graph, producer_name="pg2edge",
                              opset_imports=[helper.make_opsetid("", OPSET),
                                             helper.make_opsetid("com.microsoft", MS_OPSET)])
    model.ir_version = 10
    return model


def _name_outputs(g: GraphBuilder, values: list[str], names: list[str], graph_inputs: set[str]) -> None:
    """Give each output value its graph-output name: the producing node's output is renamed (an Identity
    only where a value is an input, an initializer or already an output). A kernel that writes a bound
    output buffer in place (`GroupQueryAttention`'s present cache) must write the graph output itself."""
    produced = {out for node in g.nodes for out in node.output}
    renames: dict[str, str] = {}
    for value, name in zip(values, names):
        if value in produced and value not in graph_inputs and value not in renames:
            renames[value] = name
        else:
            g.nodes.append(helper.make_node("Identity", [renames.get(value, value)], [name]))
    for node in g.nodes:
        for field in (node.input, node.output):
            for i, n in enumerate(field):
                if n in renames:
                    field[i] = renames[n]


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type: what the tests and the summary table look at."""
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def export_parts(parts: list[Part], params: dict, out_dir: Path, sink: WeightSink | None = None,
                 weights_name: str = "weights.onnx.data", on_part=None) -> dict[str, OnnxInfo]:
    """Export every part into `out_dir`, all sharing one external weights file; check each."""
    out_dir = Path(out_dir)
    weights = WeightFile(out_dir / weights_name)
    infos = {}
    try:
        for part in parts:
            model = build_model(part, params, sink, weights)
            path = out_dir / f"{part.name}.onnx"
            onnx.save_model(model, path)
            infos[part.name] = OnnxInfo(path, path.stat().st_size, op_histogram(model))
            if on_part is not None:
                on_part(part.name)
    finally:
        weights.close()
    for info in infos.values():
        onnx.checker.check_model(str(info.path))
    return infos
