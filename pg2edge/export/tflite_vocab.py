"""The tied embedding table at full vocabulary, without handing it to the TFLite converter.

The converter holds about six float32 copies of its constants: PaliGemma 2's
257152 x 2304 table alone (2.4 GB) would take 15 GB. The table file's graph
(lookup, scale, final norm, LM head, soft-cap) does not depend on the
vocabulary size except through the table's rows, so it is converted and
quantized at a small vocabulary `V_small`, then widened:

1. every tensor dimension equal to `V_small` (the table, its block-wise
   scales, the logits and the soft-cap's intermediates) becomes `V`, and each
   per-channel scale vector grows to `V` entries;
2. every buffer of a widened tensor is stored after the flatbuffer (offset /
   size, LiteRT's format for models over 2 GB), zero-filled;
3. the reference codes and scales of the full table are written in place
   (`tflite_quant.write_reference_codes`, as for any quantized file), or the
   float32 table itself when the recipe keeps it in float.

`V_small` is chosen to differ from every other dimension of the file, and
the widening refuses a file where it would touch anything but those tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from pg2edge.config import ModelConfig
from pg2edge.export.split import Part
from pg2edge.export.tflite_convert import TFLiteExportError
from pg2edge.export.tflite_flatbuffer import subgraphs
from pg2edge.export.tflite_quant import WeightPlan, write_reference_codes

_ALIGN = 64
_BYTES_PER_ELEMENT = {fb.TensorType.FLOAT32: 4.0, fb.TensorType.FLOAT16: 2.0, fb.TensorType.INT8: 1.0,
                      fb.TensorType.INT4: 0.5, fb.TensorType.INT32: 4.0}


def small_vocab(cfg: ModelConfig, other_dims: Sequence[int]) -> int:
    """A vocabulary size, far below the real one, that equals no other dimension of the table file."""
    taken = set(other_dims) | {cfg.text.width, cfg.text.width // 32, cfg.text.width // 64, cfg.text.width // 128}
    v = 1021
    while v in taken:
        v += 2
    return v


def small_config(cfg: ModelConfig, vocab: int) -> ModelConfig:
    """`cfg` with a `vocab`-row table (what the table file is converted at)."""
    return dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=vocab))


def _nbytes(tensor: fb.TensorT) -> int:
    count = int(np.prod(tensor.shape)) if len(tensor.shape) else 1
    return int(np.ceil(count * _BYTES_PER_ELEMENT[tensor.type]))


def _widen(model: fb.ModelT, small: int, vocab: int) -> set[int]:
    """Dimensions `small` -> `vocab` in every tensor and per-channel scale vector; returns the buffers to regrow."""
    regrow: set[int] = set()
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            shape = list(tensor.shape) if tensor.shape is not None else []
            if small not in shape:
                continue
            if shape.count(small) != 1:
                raise TFLiteExportError(f"table file: tensor {tensor.name.decode()} {shape} has the stand-in "
                                        f"vocabulary {small} twice; cannot widen it")
            tensor.shape = [vocab if d == small else d for d in shape]
            if tensor.shapeSignature is not None and len(tensor.shapeSignature):
                tensor.shapeSignature = [vocab if d == small else d for d in tensor.shapeSignature]
            q = tensor.quantization
            if q is not None and q.scale is not None and len(q.scale) == small:
                q.scale = np.zeros(vocab, np.float32)
                q.zeroPoint = np.zeros(vocab, np.int64)
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data):
                regrow.add(tensor.buffer)
    return regrow


def _serialize(model: fb.ModelT, sizes: dict[int, int]) -> bytearray:
    """The flatbuffer with buffers `sizes` stored after it (zero-filled, aligned), LiteRT's >2 GB layout."""
    for index in sizes:
        buffer = model.buffers[index]
        buffer.data, buffer.offset, buffer.size = None, 1, 1  # placeholders: the field widths are fixed
    head = len(flatbuffer_utils.convert_object_to_bytearray(model))
    offset = -(-head // _ALIGN) * _ALIGN
    for index, size in sizes.items():
        model.buffers[index].offset, model.buffers[index].size = offset, size
        offset = -(-(offset + size) // _ALIGN) * _ALIGN
    flat = flatbuffer_utils.convert_object_to_bytearray(model)
    if len(flat) != head:
        raise TFLiteExportError("table file: the flatbuffer changed size while placing its buffers")
    out = bytearray(offset)
    out[:head] = flat
    return out


def widen_table_file(small_model: bytes, plans: tuple[WeightPlan, ...], small: int, params: dict) -> bytes:
    """The table file converted at vocabulary `small`, widened to the full table in `params`."""
    table = params["llm"]["embedder"]["input_embedding"]
    vocab = int(np.shape(table)[0])
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(small_model))
    regrow = _widen(model, small, vocab)
    sizes = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            if tensor.buffer in regrow:
                sizes[tensor.buffer] = max(sizes.get(tensor.buffer, 0), _nbytes(tensor))
    out = _serialize(model, sizes)
    del model
    if any(p.scheme is not None for p in plans):
        write_reference_codes(out, plans, params)
    _write_float_tables(out, np.asarray(table, np.float32))
    return bytes(out)


def _write_float_tables(buf: bytearray, table: np.ndarray) -> None:
    """A float32 table (recipe f32 or a float LM head) gets the real rows."""
    for view in subgraphs(buf):
        for op in view.ops():
            if view.op_name(op) not in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP"):
                continue
            source = view.weight_source(op)
            if source is None or view.dtype(source[0]) != "float32":
                continue
            data = view.data_view(source[0])
            if data is not None and data.size == table.nbytes:
                data.view(np.float32)[:] = table.reshape(-1)


def table_parts_dims(parts: Sequence[Part]) -> list[int]:
    """Every input/output dimension of the table file's signatures (the stand-in vocabulary must avoid them)."""
    return [d for part in parts for spec in part.inputs + part.outputs for d in spec.shape]

