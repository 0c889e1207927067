"""Flatbuffer rewrite: embedding-table GATHER_ND -> EMBEDDING_LOOKUP, so the table can be quantized.

JAX's `table[ids]` lowers to GATHER_ND, which ai-edge-quantizer leaves in
float; EMBEDDING_LOOKUP is the op it quantizes (and whose hybrid kernel
dequantizes only the looked-up rows). The rewrite is exact:
`GATHER_ND(table[V,D], idx[...,1]) == RESHAPE(EMBEDDING_LOOKUP(RESHAPE(idx,[N]), table), [...,D])`.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils


def _opcode_index(model: fb.ModelT, builtin: int) -> int:
    """Index of `builtin` in the model's operator codes, added if missing."""
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _add_tensor(model: fb.ModelT, graph: fb.SubGraphT, name: str, shape: list[int], dtype: int,
                data: np.ndarray | None = None) -> int:
    """Append a tensor (a constant if `data` is given) and return its index."""
    tensor = fb.TensorT()
    tensor.name, tensor.shape, tensor.type = name.encode(), list(shape), dtype
    buffer = fb.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _reshape_op(model: fb.ModelT, graph: fb.SubGraphT, src: int, dst: int, shape: list[int]) -> fb.OperatorT:
    shape_tensor = _add_tensor(model, graph, graph.tensors[dst].name.decode() + "/shape", [len(shape)],
                               fb.TensorType.INT32, np.asarray(shape, np.int32))
    op = fb.OperatorT()
    op.opcodeIndex = _opcode_index(model, fb.BuiltinOperator.RESHAPE)
    op.inputs, op.outputs = [src, shape_tensor], [dst]
    op.builtinOptionsType = fb.BuiltinOptions.ReshapeOptions
    op.builtinOptions = fb.ReshapeOptionsT()
    op.builtinOptions.newShape = list(shape)
    return op


def _is_table_gather(model: fb.ModelT, graph: fb.SubGraphT, op: fb.OperatorT) -> bool:
    code = model.operatorCodes[op.opcodeIndex]
    if max(code.builtinCode, code.deprecatedBuiltinCode) != fb.BuiltinOperator.GATHER_ND:
        return False
    table, idx = (graph.tensors[i] for i in op.inputs)
    buffer = model.buffers[table.buffer]
    return (buffer.data is not None and len(buffer.data) > 0 and len(table.shape) == 2
            and table.type == fb.TensorType.FLOAT32 and idx.type == fb.TensorType.INT32
            and len(idx.shape) >= 1 and idx.shape[-1] == 1)


def _lookup_ops(model: fb.ModelT, graph: fb.SubGraphT, op: fb.OperatorT) -> list[fb.OperatorT]:
    """RESHAPE(idx,[N]) -> EMBEDDING_LOOKUP(ids, table) -> RESHAPE(rows, out shape)."""
    table_i, idx_i = op.inputs
    out_i = op.outputs[0]
    out = graph.tensors[out_i]
    n = int(np.prod(graph.tensors[idx_i].shape[:-1]))
    width = graph.tensors[table_i].shape[1]
    name = out.name.decode()
    ids = _add_tensor(model, graph, name + "/ids", [n], fb.TensorType.INT32)
    rows = _add_tensor(model, graph, name + "/rows", [n, width], fb.TensorType.FLOAT32)
    lookup = fb.OperatorT()
    lookup.opcodeIndex = _opcode_index(model, fb.BuiltinOperator.EMBEDDING_LOOKUP)
    lookup.inputs, lookup.outputs = [ids, table_i], [rows]
    return [_reshape_op(model, graph, idx_i, ids, [n]), lookup,
            _reshape_op(model, graph, rows, out_i, list(out.shape))]


def gathers_to_embedding_lookups(buf: bytes) -> bytes:
    """Replace every GATHER_ND of rows of a constant 2-D float table by an EMBEDDING_LOOKUP."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(buf))
    changed = False
    for graph in model.subgraphs:
        ops = []
        for op in graph.operators:
            if _is_table_gather(model, graph, op):
                ops += _lookup_ops(model, graph, op)
                changed = True
            else:
                ops.append(op)
        graph.operators = ops
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else buf
