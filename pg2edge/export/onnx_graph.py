"""ONNX graph building blocks: values (`Const`, `Dyn`), the weights file, the node builder.

`onnx_lower` walks a jaxpr and emits through these; sinks (`onnx_export`,
`onnx_quant`) decide how each weight is stored. Large weights go to one
external-data file per bundle, written once and shared by every part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from pg2edge.checkpoint.lazy import Lazy
from pg2edge.export.onnx_dims import affine, static_shape

NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL,
              np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.uint8): TensorProto.UINT8,
              np.dtype(np.int8): TensorProto.INT8}


@dataclass(frozen=True)
class Const:
    """A folded value (numpy, or `Lazy` until its bytes are needed).

    `param` names the weight it came from; `path` is that weight plus the shape
    ops applied to it (slice of layer 3, transpose, ...): the same path in two
    parts of a bundle is the same tensor, which is how weights are shared.
    """

    value: np.ndarray | Lazy
    param: str | None = None
    path: tuple | None = None

    def array(self) -> np.ndarray:
        """The values (reads or generates a lazy weight)."""
        return self.value.materialize() if isinstance(self.value, Lazy) else np.asarray(self.value)


@dataclass(frozen=True)
class Dyn:
    """A runtime value: the name of an ONNX tensor, its shape (ints, or symbolic dims) and dtype."""

    name: str
    shape: tuple
    dtype: np.dtype


@dataclass(frozen=True)
class Bcast:
    """A constant broadcast to a symbolic shape: stored compact (size-1 axes), expanded only if an op needs it."""

    compact: np.ndarray
    shape: tuple

    @property
    def dtype(self) -> np.dtype:
        return self.compact.dtype


class WeightSink(Protocol):
    """Emits `x @ w` where `w` [K, N] is a constant weight (float or quantized)."""

    def matmul(self, g: "GraphBuilder", x: Dyn, w_kn: Lazy, param: str | None, key: tuple | None) -> str: ...

    def fuse_key(self, w_kn: Lazy, param: str | None) -> object:
        """Matmuls on the same input with equal fuse keys may share one kernel call."""

    def gather(self, g: "GraphBuilder", table: Const, ids: Dyn) -> str: ...


class WeightFile:
    """One raw weights file shared by every ONNX part of a bundle (external data).

    Each distinct weight is written once, aligned, and referenced by offset, so
    the prefill buckets and the decode graph do not each carry a copy, and the
    converter never holds more than the tensor it is writing.
    """

    ALIGN = 4096

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self._index: dict = {}
        self.meta: dict = {}  # per key: facts a sink needs to reference a stored weight (e.g. block size)

    def __contains__(self, key) -> bool:
        return key in self._index

    def close(self) -> None:
        self._f.close()

    def tensor(self, name: str, value: np.ndarray | None, key=None) -> TensorProto:
        """An initializer whose data lives in this file (written now unless `key` was seen).

        `value` may be None when `key` is already stored: callers skip recomputing it.
        """
        if key is None or key not in self._index:
            value = np.ascontiguousarray(value)
            offset = -self._f.tell() % self.ALIGN + self._f.tell()
            self._f.seek(offset)
            self._f.write(value.data)
            entry = (offset, value.nbytes, value.dtype, value.shape)
            if key is not None:
                self._index[key] = entry
        else:
            entry = self._index[key]
        t = TensorProto(name=name, data_type=NP_TO_ONNX[np.dtype(entry[2])], dims=list(entry[3]))
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(entry[0])), ("length", str(entry[1]))):
            t.external_data.add(key=k, value=v)
        return t


def weight_key(c: Const, *extra) -> tuple | None:
    """Identity of a weight across the parts of one convert (None: not shareable)."""
    return None if c.path is None else (c.path, *extra)


@dataclass
class GraphBuilder:
    """Accumulates nodes and initializers with unique names; big constants go to `weights`."""

    weights: WeightFile | None = None
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    inline_bytes: int = 4096
    memo: dict = field(default_factory=dict)  # per-graph: weights already emitted, by key
    dims: dict = field(default_factory=dict)  # symbolic variable -> int64 [1] tensor read from an input's shape
    _count: int = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str = "const", key=None) -> str:
        """An initializer; `key` identifies a weight shared with other parts of the bundle."""
        name = self.fresh(hint.replace("/", "."))
        if value is None:  # already in the shared weights file under `key`
            self.initializers.append(self.weights.tensor(name, None, key))
            return name
        value = np.asarray(value)
        if self.weights is not None and (key is not None or value.nbytes > self.inline_bytes):
            self.initializers.append(self.weights.tensor(name, value, key))
        else:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, domain: str = "", **attrs) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain or None, **attrs))
        return out

    def shape_const(self, shape) -> str:
        """A shape as an int64 tensor: an initializer, or computed at runtime when a dim is symbolic."""
        if static_shape(shape):
            return self.const(np.asarray(shape, np.int64), "shape")
        key = ("shape", str(tuple(shape)))
        if key in self.memo:
            return self.memo[key]
        pieces, run = [], []
        for d in shape:
            if static_shape([d]):
                run.append(int(d))
                continue
            if run:
                pieces.append(self.const(np.asarray(run, np.int64), "shape"))
                run = []
            pieces.append(self.dim(d))
        if run:
            pieces.append(self.const(np.asarray(run, np.int64), "shape"))
        self.memo[key] = pieces[0] if len(pieces) == 1 else self.op("Concat", pieces, "shape", axis=0)
        return self.memo[key]

    def read_dim(self, var: str, tensor: str, axis: int) -> None:
        """Make symbolic variable `var` available as `tensor`'s runtime size along `axis`."""
        if var not in self.dims:
            self.dims[var] = self.op("Shape", [tensor], f"dim_{var}", start=axis, end=axis + 1)

    def dim(self, d) -> str:
        """A dimension as an int64 [1] tensor (memoized per expression)."""
        key = ("dim", str(d))
        if key in self.memo:
            return self.memo[key]
        c0, coeffs = affine(d)
        terms = []
        for var, c in sorted(coeffs.items()):
            if var not in self.dims:
                raise NotImplementedError(f"ONNX lowering: symbolic dimension {var!r} is not an input's axis")
            t = self.dims[var]
            terms.append(t if c == 1 else self.op("Mul", [t, self.const(np.asarray([c], np.int64), "coeff")]))
        if c0 or not terms:
            terms.append(self.const(np.asarray([c0], np.int64), "dim"))
        out = terms[0]
        for t in terms[1:]:
            out = self.op("Add", [out, t], "dim")
        self.memo[key] = out
        return out

    def reshape(self, x: str, shape) -> str:
        if static_shape(shape):
            return self.op("Reshape", [x, self.shape_const(shape)])
        return self.op("Reshape", [x, self.shape_const(shape)], allowzero=1)  # a symbolic dim may be 0

    def transpose(self, x: str, perm) -> str:
        perm = list(perm)
        return x if perm == sorted(perm) else self.op("Transpose", [x], perm=perm)
