"""Per-tensor quantization error report, so a recipe's cost is visible before anything is exported.

Rows are plain dicts `{name, shape, scheme, rel_error, max_matmul_rel_error,
float_bytes, quant_bytes}`; a caller that measures the output error on a
calibration batch adds `output_rel_error` to the rows it covers, and
`write_report` shows that column when any row has it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from pg2edge.quantize.matmul_view import matmul_view
from pg2edge.quantize.recipes import Recipe, iter_quantized
from pg2edge.quantize.schemes import QuantizedTensor, dequantize_rows

REPORT_JSON = "quant_report.json"
REPORT_MD = "quant_report.md"


def _quant_bytes(qt: QuantizedTensor) -> int:
    scale_bytes = 2 if qt.scheme.scale_dtype == "float16" else 4
    return qt.k * qt.n * qt.scheme.bits // 8 + qt.scales.size * scale_bytes


def _squared_norms(ref_kn: np.ndarray, deq_kn: np.ndarray) -> tuple[float, float]:
    """(||ref - deq||^2, ||ref||^2) in float64, a few million entries at a time."""
    k, n = ref_kn.shape
    step = max(1, (1 << 22) // k)
    err2 = norm2 = 0.0
    for start in range(0, n, step):
        ref = ref_kn[:, start:start + step].astype(np.float64)
        diff = ref - deq_kn[:, start:start + step]
        err2, norm2 = err2 + float(np.vdot(diff, diff)), norm2 + float(np.vdot(ref, ref))
    return err2, norm2


def _row(name: str, w: np.ndarray, recipe: Recipe) -> dict:
    shape = tuple(int(d) for d in np.shape(w))
    row = {"name": name, "shape": list(shape), "scheme": "f32", "rel_error": 0.0,
           "max_matmul_rel_error": 0.0, "float_bytes": 4 * math.prod(shape), "quant_bytes": 4 * math.prod(shape)}
    scheme = recipe.scheme_for(name, shape)
    if scheme is None:
        return row
    view = matmul_view(name, shape)
    w_kn = view.to_kn(np.asarray(w, np.float32))
    sq_err = sq_norm = worst = 0.0
    quant_bytes = 0
    for index, qt in iter_quantized(name, w, scheme, recipe.hessians):
        err2, norm2 = _squared_norms(w_kn[index], dequantize_rows(qt).T)
        sq_err, sq_norm = sq_err + err2, sq_norm + norm2
        worst = max(worst, math.sqrt(err2 / norm2) if norm2 else 0.0)
        quant_bytes += _quant_bytes(qt)
    row.update(scheme=scheme.label, rel_error=math.sqrt(sq_err / sq_norm) if sq_norm else 0.0,
               max_matmul_rel_error=worst, quant_bytes=quant_bytes)
    return row


def error_report(flat_params: Mapping[str, np.ndarray], recipe: Recipe) -> list[dict]:
    """One row per matmul weight: the scheme it gets and its relative Frobenius error."""
    return [_row(name, w, recipe) for name, w in flat_params.items() if matmul_view(name, np.shape(w)) is not None]


def _markdown(rows: list[dict]) -> str:
    with_output = any("output_rel_error" in r for r in rows)
    header = ["name", "shape", "scheme", "rel_error", "max_matmul_rel_error", "MB"]
    header += ["output_rel_error"] if with_output else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"`{r['name']}`", "x".join(map(str, r["shape"])), r["scheme"], f"{r['rel_error']:.3e}",
                 f"{r.get('max_matmul_rel_error', r['rel_error']):.3e}", f"{r.get('quant_bytes', 0) / 2**20:.2f}"]
        if with_output:
            out = r.get("output_rel_error")
            cells.append("" if out is None else f"{out:.3e}")
        lines.append("| " + " | ".join(cells) + " |")
    total_f = sum(r.get("float_bytes", 0) for r in rows) / 2**20
    total_q = sum(r.get("quant_bytes", 0) for r in rows) / 2**20
    lines.append(f"\nMatmul weights: {total_f:.2f} MB float32 -> {total_q:.2f} MB quantized.")
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `quant_report.json` and `quant_report.md` (a markdown table) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / REPORT_JSON, out / REPORT_MD
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    md_path.write_text(_markdown(rows))
    return json_path, md_path
