"""Write one graph-split `Part` as an ONNX model that onnxruntime runs.

Weights go through a `WeightSink`: float `MatMul`/`Gather` initializers, or the
quantized kernels chosen by the recipe (see `onnx_quant.py`). Parts over 2 GB
are saved with external data next to the `.onnx` file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from pg2edge.export.onnx_lower import NP_TO_ONNX, Const, Dyn, GraphBuilder, Lowering, WeightSink, trace
from pg2edge.export.split import Part

OPSET = 21
MS_OPSET = 1
_TWO_GB = 2 ** 31 - 2 ** 20


class FloatWeights:
    """Float32 weights as plain initializers."""

    def matmul(self, g: GraphBuilder, x: Dyn, w_kn: np.ndarray, param: str | None) -> str:
        return g.op("MatMul", [x.name, g.const(w_kn.astype(np.float32), param or "w")])

    def gather(self, g: GraphBuilder, table: Const, ids: str) -> str:
        return g.op("Gather", [g.const(table.value.astype(np.float32), table.param or "table"), ids], axis=0)


@dataclass(frozen=True)
class OnnxInfo:
    """What was written: files, byte size, op histogram."""

    path: Path
    files: tuple[Path, ...]
    bytes: int
    ops: dict[str, int]


def build_model(part: Part, params: dict, sink: WeightSink | None = None) -> onnx.ModelProto:
    """Trace `part.fn` with `params` bound and lower it to an ONNX ModelProto."""
    sink = sink or FloatWeights()
    closed, names, arrays = trace(part.fn, params, [(s.name, s.shape, s.dtype) for s in part.inputs])
    g = GraphBuilder()
    lowering = Lowering(g, sink)
    weight_args = [Const(np.asarray(a), n) for n, a in zip(names, arrays)]
    input_args = [Dyn(s.name, s.shape, np.dtype(s.dtype)) for s in part.inputs]
    outs = lowering.run(closed.jaxpr, list(closed.consts), weight_args + input_args)
    for spec, value in zip(part.outputs, outs):
        g.nodes.append(helper.make_node("Identity", [lowering.materialize(value)], [spec.name]))
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


def save_model(model: onnx.ModelProto, path: Path) -> OnnxInfo:
    """Check and save atomically; external data when the model is over 2 GB."""
    path = Path(path)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    big = model.ByteSize() > _TWO_GB if _can_measure(model) else True
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_path = Path(tmp) / path.name
        if big:
            data_name = path.name + ".data"
            onnx.save_model(model, tmp_path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            onnx.checker.check_model(str(tmp_path))
        else:
            onnx.checker.check_model(model)
            onnx.save_model(model, tmp_path)
        files = []
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, path.parent / f.name)
            files.append(path.parent / f.name)
    return OnnxInfo(path, tuple(files), sum(f.stat().st_size for f in files), ops)


def _can_measure(model: onnx.ModelProto) -> bool:
    """ByteSize() itself fails past 2 GB on some protobuf builds; treat that as big."""
    try:
        model.ByteSize()
        return True
    except Exception:  # noqa: BLE001 - protobuf raises different types per backend
        return False


def export_onnx(part: Part, params: dict, path: Path, sink: WeightSink | None = None) -> OnnxInfo:
    """Trace, lower, check and write one part."""
    return save_model(build_model(part, params, sink), path)
