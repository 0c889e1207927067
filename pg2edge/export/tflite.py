"""TFLite / LiteRT export of one graph-split `Part`: float conversion, recipe quantization, atomic write.

    float:  part.fn + weights -> jax2tf -> TFLiteConverter (builtin ops only)     [tflite_convert]
            -> GATHER_ND of the embedding table as EMBEDDING_LOOKUP               [tflite_rewrite]
    quant:  ai-edge-quantizer on the float flatbuffer, reference codes written in [tflite_quant]

A file has one signature per part given, keyed by `part.name`, whose input
and output names are the part's `TensorSpec` names: the runtime calls
`Interpreter(path).get_signature_runner(part.name)(**inputs)`. Several parts
in one file (a staged export's prefill buckets and decode) share weights.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pg2edge.export.split import Part
from pg2edge.export.tflite_convert import TFLiteExportError, as_parts, convert_float
from pg2edge.export.tflite_flatbuffer import (
    op_histogram,
    read_weight_dtypes,
    read_weights,
    signature_keys,
    tensor_dtypes,
)
from pg2edge.export.tflite_quant import WeightPlan, plan_weights, quantize_flatbuffer
from pg2edge.export.tflite_rewrite import gathers_to_embedding_lookups
from pg2edge.quantize.recipes import Recipe

__all__ = ["TFLiteExportError", "TFLiteInfo", "export_tflite", "float_tflite", "read_weight_dtypes", "tflite_bytes"]


@dataclass(frozen=True)
class TFLiteInfo:
    """What was written: size, ops, dtypes, and how each weight was stored."""

    path: Path
    signature: str  # the first (or only) signature
    size_bytes: int
    op_histogram: dict[str, int]
    tensor_dtypes: dict[str, int]  # dtype -> number of tensors
    weight_dtypes: dict[str, int]  # dtype of matmul / embedding weights -> count ("int4": 28, ...)
    weights: tuple[WeightPlan, ...]  # every FULLY_CONNECTED / EMBEDDING_LOOKUP weight and its scheme
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready summary (for the manifest or a benchmark row)."""
        return {
            "file": self.path.name, "signature": self.signature, "bytes": self.size_bytes,
            "ops": self.op_histogram, "tensor_dtypes": self.tensor_dtypes, "weight_dtypes": self.weight_dtypes,
            "weights": [{"param": w.label, "op": w.op, "mode": w.mode,
                         "scheme": None if w.scheme is None else w.scheme.label} for w in self.weights],
            "seconds": round(self.seconds, 3),
        }


def float_tflite(part: Part | Sequence[Part], params: dict) -> bytes:
    """The part(s) as a float flatbuffer, embedding gathers as (quantizable) EMBEDDING_LOOKUPs."""
    return gathers_to_embedding_lookups(convert_float(part, params))


def tflite_bytes(part: Part | Sequence[Part], params: dict, recipe: Recipe | None = None,
                 float_model: bytes | None = None, exact: bool = False) -> tuple[bytes, tuple[WeightPlan, ...]]:
    """The part's flatbuffer (quantized per `recipe`, float if None) and its weight plan.

    `float_model` is `float_tflite(part, params)` when the caller already has it
    (one conversion, several recipes).
    """
    if float_model is None:
        float_model = float_tflite(part, params)
    elif sorted(signature_keys(float_model)) != sorted(p.name for p in as_parts(part)):
        raise TFLiteExportError(f"float model has signatures {signature_keys(float_model)}, "
                                f"not the parts {[p.name for p in as_parts(part)]}")
    plans = plan_weights(float_model, params, recipe, exact)
    return quantize_flatbuffer(float_model, plans, params), plans


def _write_atomic(data: bytes, path: Path) -> None:
    """Write to a temp file in the same directory, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_tflite(part: Part | Sequence[Part], params: dict, out_path: str | Path, recipe: Recipe | None = None,
                  float_model: bytes | None = None, exact: bool = False) -> TFLiteInfo:
    """Convert `part` with `params` as constants into one `.tflite` (weights per `recipe`), atomically."""
    start = time.perf_counter()
    path = Path(out_path)
    if not path.parent.is_dir():
        raise TFLiteExportError(f"{path}: output directory {path.parent} does not exist")
    data, plans = tflite_bytes(part, params, recipe, float_model, exact)
    return _written(data, plans, path, as_parts(part)[0].name, start)


def _written(data: bytes, plans: tuple[WeightPlan, ...], path: Path, signature: str, start: float) -> TFLiteInfo:
    """Write the file atomically and describe it."""
    _write_atomic(data, path)
    return TFLiteInfo(path=path, signature=signature, size_bytes=len(data), op_histogram=op_histogram(data),
                      tensor_dtypes=tensor_dtypes(data), weight_dtypes=dict(Counter(w.dtype for w in read_weights(data))),
                      weights=plans, seconds=time.perf_counter() - start)


def export_wide_table(parts: Sequence[Part], small_parts: Sequence[Part], small: int, params: dict,
                      out_path: str | Path, recipe: Recipe | None = None, exact: bool = False) -> TFLiteInfo:
    """The tied-table file (`stages.table` parts) at full vocabulary, converted at `small` rows (`tflite_vocab`).

    `small_parts` are the same signatures built for a `small`-row table;
    `params` holds the full table and the final norm.
    """
    from pg2edge.export.tflite_vocab import widen_table_file

    start = time.perf_counter()
    path = Path(out_path)
    table = params["llm"]["embedder"]["input_embedding"]
    small_params = {"llm": {"embedder": {"input_embedding": np.array(table[:small])},
                            "final_norm": params["llm"]["final_norm"]}}
    data, plans = tflite_bytes(small_parts, small_params, recipe, exact=exact)
    data = widen_table_file(data, plans, small, params)
    return _written(data, plans, path, as_parts(parts)[0].name, start)
