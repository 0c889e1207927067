"""Read TFLite flatbuffers: signatures, op histogram, and the weights of matmul/embedding ops.

Reading uses the flatbuffer's lazy accessors (no copy of the weights), so it
also answers "are the int4 weights really in this file?" for large models.
Buffers may be inline or stored after the flatbuffer (offset/size), as
ai-edge-quantizer writes them.
"""

from __future__ import annotations

import mmap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
from ai_edge_litert import schema_py_generated as fb

# ops that multiply by (or look up in) a weight, and the inputs a constant weight can be
WEIGHT_INPUTS = {"FULLY_CONNECTED": (1,), "EMBEDDING_LOOKUP": (1,), "BATCH_MATMUL": (1, 0), "CONV_2D": (1,)}

_OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_NUMPY = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "int32": np.int32,
          "int64": np.int64, "uint8": np.uint8, "bool": np.bool_, "bfloat16": ml_dtypes.bfloat16}


@dataclass(frozen=True)
class WeightTensor:
    """A constant weight consumed by a matmul/embedding op (through a DEQUANTIZE if weight-only)."""

    op: str  # consuming op: FULLY_CONNECTED, EMBEDDING_LOOKUP, ...
    scope: str  # ai-edge-quantizer's scope of the consuming op: "<output names>;"
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "int8", "int4", ...
    granularity: str | None  # None (float), "tensor", "channel", "block"
    block_size: int = 0
    dequantized: bool = False  # fed through an explicit DEQUANTIZE op (weight-only mode)


Source = bytes | bytearray | memoryview | mmap.mmap | str | Path


def load(source: Source) -> bytes | bytearray | memoryview | mmap.mmap:
    """Model bytes: given, or a read-only memory map of the file (no copy of the weights)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return source


class Flatbuffer:
    """Lazy view of one subgraph (signature) of a TFLite model (`subgraphs` gives them all)."""

    def __init__(self, source: Source, subgraph: int = 0):
        self.buf = buf = load(source)
        self.model = fb.Model.GetRootAs(buf, 0)
        self.subgraph = subgraph
        self.graph = self.model.Subgraphs(subgraph)
        self._producer = {}
        for i in range(self.graph.OperatorsLength()):
            for t in self.graph.Operators(i).OutputsAsNumpy():
                self._producer[int(t)] = i

    def op_name(self, op: fb.Operator) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        return _OP_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    def ops(self):
        return [self.graph.Operators(i) for i in range(self.graph.OperatorsLength())]

    def tensor(self, index: int) -> fb.Tensor:
        return self.graph.Tensors(index)

    def tensor_name(self, index: int) -> str:
        return self.tensor(index).Name().decode()

    def dtype(self, index: int) -> str:
        return _TYPE_NAMES[self.tensor(index).Type()]

    def data_view(self, index: int) -> np.ndarray | None:
        """A constant tensor's bytes as a uint8 view into the model (writable over a bytearray), or None."""
        buffer = self.model.Buffers(self.tensor(index).Buffer())
        if buffer is None:
            return None
        if buffer.Offset() > 1:
            return np.frombuffer(self.buf, np.uint8, buffer.Size(), buffer.Offset())
        if buffer.DataLength():
            return buffer.DataAsNumpy()
        return None

    def _through_dequantize(self, index: int) -> tuple[int, bool]:
        producer = self.producer(index)
        if producer is not None and self.op_name(producer) == "DEQUANTIZE":
            return int(producer.InputsAsNumpy()[0]), True
        return index, False

    def weight_source(self, op: fb.Operator) -> tuple[int, bool] | None:
        """(tensor, via DEQUANTIZE) of a matmul/embedding op's constant weight, or None if it has none."""
        inputs = op.InputsAsNumpy()
        for i in WEIGHT_INPUTS[self.op_name(op)]:
            index, dequantized = self._through_dequantize(int(inputs[i]))
            if self.data_view(index) is not None:
                return index, dequantized
        return None

    def blockwise_scales(self, index: int) -> int | None:
        """Index of the float16 scale tensor of a block-wise quantized tensor, else None."""
        q = self.tensor(index).Quantization()
        if q is None or q.DetailsType() != fb.QuantizationDetails.BlockwiseQuantization:
            return None
        block = fb.BlockwiseQuantization()
        block.Init(q.Details().Bytes, q.Details().Pos)
        return block.Scales()

    def producer(self, index: int) -> fb.Operator | None:
        i = self._producer.get(index)
        return None if i is None else self.graph.Operators(i)

    def scope(self, op: fb.Operator) -> str:
        """ai-edge-quantizer's name for an op: its output tensor names joined by ';' plus ';'."""
        names = [self.tensor_name(int(t)) for t in op.OutputsAsNumpy() if t >= 0]
        return "".join(n + ";" for n in names if n)


def subgraphs(source: Source) -> list[Flatbuffer]:
    """A view of every subgraph of the model (one per signature), over one mapping of the file."""
    buf = load(source)
    return [Flatbuffer(buf, i) for i in range(fb.Model.GetRootAs(buf, 0).SubgraphsLength())]


def signature_keys(source: Source) -> list[str]:
    """The model's signature keys (a part's file has exactly one: the part's name)."""
    model = fb.Model.GetRootAs(load(source), 0)
    return [model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())]


def op_histogram(source: Source) -> dict[str, int]:
    """How many ops of each builtin kind the model has."""
    return dict(Counter(view.op_name(op) for view in subgraphs(source) for op in view.ops()).most_common())


def tensor_dtypes(source: Source) -> dict[str, int]:
    """How many tensors of each dtype, constants and activations together."""
    return dict(Counter(view.dtype(i) for view in subgraphs(source)
                        for i in range(view.graph.TensorsLength())).most_common())


def _all_ops(source: Source):
    """(subgraph view, op) for every op of every subgraph."""
    for view in subgraphs(source):
        for op in view.ops():
            yield view, op


def _granularity(view: Flatbuffer, index: int) -> tuple[str | None, int]:
    q = view.tensor(index).Quantization()
    if q is None:
        return None, 0
    if q.DetailsType() == fb.QuantizationDetails.BlockwiseQuantization:
        block = fb.BlockwiseQuantization()
        block.Init(q.Details().Bytes, q.Details().Pos)
        return "block", block.BlockSize()
    if q.ScaleLength() > 1:
        return "channel", 0
    return ("tensor", 0) if q.ScaleLength() == 1 else (None, 0)


def read_weights(source: Source) -> list[WeightTensor]:
    """Every constant weight of a FULLY_CONNECTED / EMBEDDING_LOOKUP / BATCH_MATMUL / CONV_2D op, per subgraph."""
    out = []
    for view, op in _all_ops(source):
        kind = view.op_name(op)
        source_ = view.weight_source(op) if kind in WEIGHT_INPUTS else None
        if source_ is None:
            continue
        index, dequantized = source_
        granularity, block = _granularity(view, index)
        t = view.tensor(index)
        out.append(WeightTensor(kind, view.scope(op), t.Name().decode(), tuple(int(d) for d in t.ShapeAsNumpy()),
                                view.dtype(index), granularity, block, dequantized))
    return out


def read_weight_dtypes(source: Source) -> dict[str, str]:
    """Weight tensor name -> its stored dtype ("float32", "int8", "int4"), for matmul/embedding ops."""
    out: dict[str, str] = {}
    for w in read_weights(source):
        key = w.name if w.name not in out else f"{w.name}@{w.scope}"
        out[key] = w.dtype
    return out


def _unpack_int4(raw: np.ndarray, size: int) -> np.ndarray:
    """TFLite packs two signed 4-bit values per byte, low nibble first."""
    nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(-1)[:size].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def tensor_array(view: Flatbuffer, index: int) -> np.ndarray:
    """A constant tensor's stored values (int4 unpacked to int8)."""
    shape = tuple(int(d) for d in view.tensor(index).ShapeAsNumpy())
    raw = view.data_view(index)
    dtype = view.dtype(index)
    if dtype == "int4":
        return _unpack_int4(raw, int(np.prod(shape))).reshape(shape)
    return raw.view(_NUMPY[dtype]).reshape(shape)


def _scales(view: Flatbuffer, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """Per-element scale broadcastable to `shape` (tensor-, channel- or block-wise)."""
    blockwise = view.blockwise_scales(index)
    if blockwise is not None:
        scales = tensor_array(view, blockwise).astype(np.float32)  # [out, in / block]
        return np.repeat(scales, shape[1] // scales.shape[1], axis=1)
    q = view.tensor(index).Quantization()
    scale = q.ScaleAsNumpy().astype(np.float32)
    if scale.size == 1:
        return scale.reshape(())
    axis = q.QuantizedDimension()
    return scale.reshape([-1 if d == axis else 1 for d in range(len(shape))])


@dataclass(frozen=True, eq=False)
class OpWeight:
    """A matmul/embedding op's weight as its kernel sees it: float32 values (dequantized if stored quantized)."""

    op: str
    scope: str
    values: np.ndarray  # FULLY_CONNECTED / EMBEDDING_LOOKUP: [N, K]
    subgraph: int = 0
    buffer: int = 0  # signatures that share a weight share its buffer


def weight_ops(source: Source) -> list[OpWeight]:
    """Every matmul/embedding op with a constant weight (of every subgraph) and the weight's float values."""
    out = []
    for view, op in _all_ops(source):
        weight = view.weight_source(op) if view.op_name(op) in WEIGHT_INPUTS else None
        if weight is None:
            continue
        index, _ = weight
        values = tensor_array(view, index)
        if values.dtype == np.int8 and view.tensor(index).Quantization() is not None:
            values = values.astype(np.float32) * _scales(view, index, values.shape)
        out.append(OpWeight(view.op_name(op), view.scope(op), np.asarray(values, np.float32), view.subgraph,
                            view.tensor(index).Buffer()))
    return out
