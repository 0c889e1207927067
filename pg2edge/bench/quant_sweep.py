"""What each quantization choice costs the shipped model, on thousands of held-out examples, in JAX.

The exported artifacts compute with exactly the fake-quantized weights (TFLite
bit for bit at float activations; ONNX's int8-activation kernels add a drift
of their own, which `pg2edge.bench.parity` measures on the real bundles). So
running the float model with each recipe's fake-quant isolates the cost of
the weights alone: greedy outputs identical to float, and every task metric's
change with its paired 95 % interval, for recipes, int4 blocks and int4 scale
choices side by side, in minutes instead of a bundle per choice.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

from pg2edge.bench.machine import machine_info
from pg2edge.bench.parity import MAX_NEW_TOKENS, Scored, delta_cell, heldout_examples, reference_summary, task_changes
from pg2edge.bench.report_files import write_report
from pg2edge.eval.predictors import JaxPredictor
from pg2edge.eval.report import EvalReport, evaluate
from pg2edge.export.report_calibration import GPTQ_IMAGES, gptq_hessians
from pg2edge.quantize.recipes import fake_quant_params, get_recipe
from pg2edge.shipped_model import DEFAULT_MODEL, shipped_model

# (row name, recipe, int4 block, int4 clip, GPTQ codes?)
VARIANTS = (("int8", "int8", 32, "mse", False), ("int8 gptq", "int8", 32, "mse", True),
            ("int4 b32 max", "int4", 32, "max", False), ("int4 b32 mse", "int4", 32, "mse", False),
            ("int4 b32 mse gptq", "int4", 32, "mse", True),
            ("int4 b128 max", "int4", 128, "max", False), ("int4 b128 mse", "int4", 128, "mse", False),
            ("mixed b32 max", "mixed", 32, "max", False), ("mixed b32 mse", "mixed", 32, "mse", False),
            ("mixed b32 mse gptq", "mixed", 32, "mse", True))


def compare(examples: list, ref: EvalReport, rep: EvalReport) -> dict:
    """Greedy agreement with the reference (overall and per task) and each task metric's change."""
    same = [a["prediction"] == b["prediction"] for a, b in zip(ref.predictions, rep.predictions)]
    by_task: dict[str, list[bool]] = {}
    for ex, s in zip(examples, same):
        by_task.setdefault(ex.task, []).append(s)
    return {"greedy_exact_match": float(np.mean(same)),
            "greedy_exact_by_task": {t: float(np.mean(v)) for t, v in by_task.items()},
            **task_changes(examples, _scored(ref), _scored(rep))}


def _scored(rep: EvalReport) -> Scored:
    return rep.metrics, rep.primary, [r["score"] for r in rep.predictions]


def run_sweep(images: int | None = None, variants: tuple[tuple[str, str, int, str, bool], ...] = VARIANTS,
              batch: int = 32, gptq_images: int = GPTQ_IMAGES, log=print) -> dict:
    """Evaluate the float model and each variant's fake-quant on `images` held-out test images (None: all)."""
    model = shipped_model(DEFAULT_MODEL)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pg2edge-sweep-") as tmp:
        examples = heldout_examples(model, images, Path(tmp))
        base = JaxPredictor.from_checkpoint(model.path)
        ref = evaluate(base, examples, batch, MAX_NEW_TOKENS)
        float_params = jax.tree.map(np.asarray, base.params)
        result = {"model": model.name, "images": len({ex.image for ex in examples}), "examples": len(examples),
                  "max_new_tokens": MAX_NEW_TOKENS, "machine": machine_info(),
                  "reference": reference_summary(_scored(ref)), "rows": []}
        hessians = None
        if any(v[4] for v in variants):
            hessians = gptq_hessians(base.cfg, base.tokenizer, float_params, gptq_images)
        for name, quant, block, clip, gptq in variants:
            recipe = get_recipe(quant, block, clip=clip)
            params = fake_quant_params(float_params, replace(recipe, hessians=hessians if gptq else None))
            predictor = JaxPredictor(jax.tree.map(jax.numpy.asarray, params), base.cfg, base.tokenizer, name=name)
            row = {"variant": name, "quant": quant, "block": block, "int4_clip": clip,
                   "gptq_images": gptq_images if gptq else 0,
                   **compare(examples, ref, evaluate(predictor, examples, batch, MAX_NEW_TOKENS))}
            result["rows"].append(row)
            log(f"{name:<14} greedy exact {row['greedy_exact_match']:.3f}")
    result["seconds"] = time.perf_counter() - t_start
    return result


def markdown(result: dict) -> str:
    """quant_sweep.md: greedy agreement and every task's change (points, ± 95 % half-width) per variant."""
    tasks = list(result["reference"]["primary"])
    head = ["variant", "greedy exact", "caption exact", *(f"Δ {t}" for t in tasks)]
    lines = [f"Shipped model `{result['model']}`, JAX fake-quant of each recipe: {result['examples']} examples on "
             f"{result['images']} held-out test images; reference = the float model. Task deltas are metric "
             f"points (x100) with the half-width of their 95 % paired bootstrap interval.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["variant"], f"{r['greedy_exact_match']:.3f}",
                 f"{r['greedy_exact_by_task'].get('caption', float('nan')):.3f}",
                 *(delta_cell(r, t) for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(result: dict, out: Path, stem: str = "quant_sweep") -> list[Path]:
    """`<stem>.json` and `<stem>.md` under `out`."""
    return write_report(result, markdown(result), out, stem)
