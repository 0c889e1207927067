"""`make demo`: the shipped trained tiny model through the whole chain, with task metrics per artifact.

Regenerates held-out test images of the suite the model was trained on (never seen
in training), converts the model to ONNX and TFLite at each quantization, runs every
artifact with the on-device runtime, scores it with `pg2edge.eval` next to the float
JAX model, prints one table and writes `demo_out/report.html`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from pg2edge.demo_report import GalleryItem, write_report_html
from pg2edge.eval.datasets import load_suite
from pg2edge.eval.report import EvalReport, evaluate
from pg2edge.eval.scoring import LOWER_IS_BETTER
from pg2edge.shipped_model import DEFAULT_MODEL, ShippedModel, shipped_model
from pg2edge.tasks.suite import split_indices, write_suite

TASK_ORDER = ("caption", "count_shape", "count_color", "color", "detect", "segment", "ocr")
PREFILL_BUCKET = 16  # text tokens: every suite prompt fits
MAX_NEW_TOKENS = 48  # the longest suite target (4-shape caption, a mask) is under 40 tokens
GALLERY_SIZE = 21


@dataclass
class DemoRow:
    """One artifact's scores: what `pg2edge demo` prints per line."""

    name: str
    report: EvalReport
    bundle_mb: float | None = None
    convert_s: float | None = None
    same_as_jax: float | None = None  # fraction of predictions identical to the float JAX model's


@dataclass
class DemoResult:
    """Everything the demo measured, for the table, the HTML page and tests."""

    model: ShippedModel
    examples: int
    rows: list[DemoRow] = field(default_factory=list)
    report_html: Path | None = None
    seconds: float = 0.0


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _agreement(a: EvalReport, b: EvalReport) -> float:
    pairs = list(zip(a.predictions, b.predictions))
    return sum(x["prediction"] == y["prediction"] for x, y in pairs) / max(len(pairs), 1)


def metric_columns(report: EvalReport) -> list[tuple[str, str]]:
    """(task, headline metric) in the suite's task order."""
    return [(t, report.primary[t]) for t in TASK_ORDER if t in report.metrics]


def table_rows(result: DemoResult) -> tuple[list[str], list[dict]]:
    """Column names and one dict per artifact (shared by the console table and the HTML page)."""
    columns = metric_columns(result.rows[0].report)
    names = ["artifact", *(f"{t} {m}" for t, m in columns), "same as JAX", "bundle MB", "convert s"]
    rows = []
    for row in result.rows:
        cells: dict[str, object] = {"artifact": row.name}
        for (task, metric), name in zip(columns, names[1:]):
            cells[name] = float(row.report.metrics[task][metric])
        cells["same as JAX"] = row.same_as_jax if row.same_as_jax is not None else ""
        cells["bundle MB"] = round(row.bundle_mb, 2) if row.bundle_mb is not None else ""
        cells["convert s"] = round(row.convert_s, 1) if row.convert_s is not None else ""
        rows.append(cells)
    return names, rows


def format_table(result: DemoResult) -> str:
    """The console table: one line per artifact, headline metric per task (cer: lower is better)."""
    names, rows = table_rows(result)
    widths = [max(len(n), 9) for n in names]
    widths[0] = max(len(r["artifact"]) for r in rows) + 1
    lines = ["  ".join(n.rjust(w) if i else n.ljust(w) for i, (n, w) in enumerate(zip(names, widths)))]
    for r in rows:
        cells = []
        for i, (n, w) in enumerate(zip(names, widths)):
            v = r[n]
            text = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(text.rjust(w) if i else text.ljust(w))
        lines.append("  ".join(cells))
    lower = sorted(m for m in LOWER_IS_BETTER if any(n.endswith(" " + m) for n in names))
    if lower:
        lines.append(f"({', '.join(lower)}: lower is better; every other metric: higher is better)")
    return "\n".join(lines)


def _gallery(result: DemoResult, examples: Sequence) -> list[GalleryItem]:
    """A few examples of every task, with every artifact's answer."""
    per_task = max(1, GALLERY_SIZE // len(TASK_ORDER))
    picked: list[int] = []
    for task in TASK_ORDER:
        picked += [i for i, ex in enumerate(examples) if ex.task == task][:per_task]
    return [GalleryItem(image=examples[i].image, task=examples[i].task, prefix=examples[i].prefix,
                        reference=examples[i].references[0],
                        predictions={r.name: r.report.predictions[i]["prediction"] for r in result.rows})
            for i in sorted(picked)]


def run_demo(out: Path = Path("demo_out"), images: int = 24, quants: Sequence[str] = ("f32", "int8", "int4"),
             formats: Sequence[str] = ("onnx", "tflite"), model_name: str = DEFAULT_MODEL,
             log: Callable[[str], None] = print) -> DemoResult:
    """Convert, run and score the shipped model; print the table and write `out/report.html`."""
    from pg2edge.eval.predictors import BundlePredictor, JaxPredictor
    from pg2edge.export.convert import ConvertOptions, convert

    start = time.perf_counter()
    model = shipped_model(model_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    held_out = write_suite(out / "heldout", model.suite, force=True,
                           only=split_indices(model.suite, "test", limit=images))
    examples = load_suite(held_out.out / "test.jsonl")
    log(f"shipped model {model.name} ({model.config.name}); {images} held-out test images, {len(examples)} examples")

    result = DemoResult(model=model, examples=len(examples))
    jax_report = evaluate(JaxPredictor.from_checkpoint(model.path), examples, batch=32,
                          max_new_tokens=MAX_NEW_TOKENS, dataset="suite test (held out)")
    result.rows.append(DemoRow("jax f32 (reference)", jax_report))
    log(f"  jax f32 reference: {jax_report.seconds:.1f} s")
    max_len = model.config.num_image_tokens + PREFILL_BUCKET + MAX_NEW_TOKENS
    for quant in quants:
        bundle = out / f"{model.config.name}-{quant}"
        t0 = time.perf_counter()
        convert(ConvertOptions(size=model.config.size, res=model.config.resolution, checkpoint=model.path,
                               formats=tuple(formats), quant=quant, out=bundle, force=True, max_len=max_len,
                               prefill=(PREFILL_BUCKET,)))
        convert_s = time.perf_counter() - t0
        for fmt in formats:
            report = evaluate(BundlePredictor(bundle, backend=fmt), examples, batch=1,
                              max_new_tokens=MAX_NEW_TOKENS, dataset="suite test (held out)")
            result.rows.append(DemoRow(f"{fmt} {quant}", report, _dir_mb(bundle / fmt) if (bundle / fmt).is_dir()
                                       else _dir_mb(bundle), convert_s, _agreement(report, jax_report)))
            log(f"  {fmt} {quant}: converted in {convert_s:.1f} s, evaluated in {report.seconds:.1f} s")
    result.seconds = time.perf_counter() - start
    names, rows = table_rows(result)
    intro = (f"Shipped model {model.name} ({model.config.name}, trained by pg2edge on its synthetic suite); "
             f"{len(examples)} examples on {images} held-out test images; greedy decoding, "
             f"{MAX_NEW_TOKENS} new tokens at most; total demo time {result.seconds:.0f} s.")
    result.report_html = write_report_html(out / "report.html", "pg2edge demo", intro, rows, names,
                                           _gallery(result, examples))
    log(format_table(result))
    log(f"report: {result.report_html}  (bundles in {out}/; run one with: "
        f"pg2edge run {out}/{model.config.name}-int4 --image IMG --prompt 'detect circle')")
    return result
