"""Accuracy parity of every artifact of the shipped tiny model against the float JAX model.

For f32 / int8 / int4 / mixed (from the shipped float model) and QAT-int4 (from the
shipped QAT fine-tune), in ONNX and TFLite: logit cosine (mean, min), KL, top-1
agreement along the JAX greedy path (teacher-forced), greedy exact match over the
prompts, and each task metric's delta to the float JAX model, on held-out test
images of the suite the model was trained on.

`pg2edge bench` and `benchmarks/parity.py` call `run_parity`, then `write_results`
(parity.json with a list `rows`, parity.md, parity.png).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pg2edge.bench.machine import machine_info
from pg2edge.bench.report_files import write_report
from pg2edge.eval.datasets import load_suite
from pg2edge.eval.parity import ParityTally, paired_delta
from pg2edge.eval.predictors import JaxPredictor, decode_text, prompt_ids
from pg2edge.eval.report import score_all
from pg2edge.eval.scoring import LOWER_IS_BETTER
from pg2edge.export.convert import ConvertOptions, convert
from pg2edge.export.report_calibration import CALIBRATION_SEED, GPTQ_IMAGES
from pg2edge.runtime.engine import Engine
from pg2edge.shipped_model import DEFAULT_MODEL, QAT_MODEL, ShippedModel, shipped_model
from pg2edge.tasks.suite import split_indices, write_suite

MAX_NEW_TOKENS = 48
PREFILL = 16
# (artifact name, convert --quant, shipped model it is converted from, convert --gptq calibration images)
# Every recipe as `convert` makes it by default (round-to-nearest codes), plus `mixed` with GPTQ codes.
ARTIFACTS = (("f32", "f32", DEFAULT_MODEL, 0), ("int8", "int8", DEFAULT_MODEL, 0), ("int4", "int4", DEFAULT_MODEL, 0),
             ("mixed", "mixed", DEFAULT_MODEL, 0), ("mixed-gptq", "mixed", DEFAULT_MODEL, GPTQ_IMAGES),
             ("qat-int4", "int4", QAT_MODEL, 0))


def reference(predictor: JaxPredictor, examples: list, batch: int = 16) -> list[tuple[list[int], np.ndarray]]:
    """The float model's greedy tokens (up to and including <eos>) and the logits before each."""
    from pg2edge.model import generate
    from pg2edge.preprocess import load_image, preprocess

    cfg, tok = predictor.cfg, predictor.tokenizer
    out = []
    for start in range(0, len(examples), batch):
        rows = examples[start:start + batch]
        pixels = np.stack([preprocess(load_image(ex.image), cfg.resolution, cfg.resize_filter) for ex in rows])
        prompts = [prompt_ids(tok, ex.prefix) for ex in rows]
        gen = generate(predictor.params, cfg, pixels, prompts, max_new_tokens=MAX_NEW_TOKENS,
                       max_len=cfg.num_image_tokens + PREFILL + MAX_NEW_TOKENS, eos_id=tok.eos_id)
        for i, tokens in enumerate(gen.tokens):
            out.append((tokens, gen.logits[i, :len(tokens)]))
    return out


def task_delta_cis(examples: list, ref_scores: list[float], scores: list[float], deltas: dict) -> dict:
    """{task: 95 % paired bootstrap interval of its metric change} (metric units, not points).

    The spread comes from the per-example scores, the centre is the metric's own
    change `deltas[task]`: the same thing for mean-of-examples metrics, and for
    pooled ones (CER's edits over characters, detection counts) an interval
    around the figure the table reports rather than around a different mean.
    """
    by_task: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.task, []).append(i)
    out = {}
    for task, idx in by_task.items():
        ci = paired_delta([ref_scores[i] for i in idx], [scores[i] for i in idx])
        d, shift = deltas[task], deltas[task] - ci["delta"]
        out[task] = {"delta": d, "lo": min(d, ci["lo"] + shift), "hi": max(d, ci["hi"] + shift),  # no rounding
                     "n": ci["n"], "per_example_delta": ci["delta"]}                          # leaves d outside
    return out


Scored = tuple[dict, dict, list[float]]  # (metrics per task, primary metric per task, per-example scores)


def task_changes(examples: list, ref: Scored, new: Scored) -> dict:
    """Each task's primary metric under `new`, its change from `ref` and that change's 95 % interval."""
    (ref_metrics, primary, ref_scores), (metrics, _, scores) = ref, new
    delta = {t: metrics[t][primary[t]] - ref_metrics[t][primary[t]] for t in metrics}
    return {"task_metrics": {t: metrics[t][primary[t]] for t in metrics}, "task_metric_delta": delta,
            "task_delta_ci": task_delta_cis(examples, ref_scores, scores, delta)}


def reference_summary(ref: Scored) -> dict:
    """The reference's headline metric per task and which metric that is (the report's `reference`)."""
    metrics, primary, _ = ref
    return {"task_metrics": {t: metrics[t][primary[t]] for t in metrics}, "primary": primary}


def heldout_examples(model: ShippedModel, images: int | None, tmp: Path) -> list:
    """The model's first `images` held-out test images (None: all), regenerated byte for byte, as examples."""
    suite = write_suite(tmp / "heldout", model.suite, only=split_indices(model.suite, "test", limit=images))
    return load_suite(suite.out / "test.jsonl")


def artifact_rows(bundle: Path, backend: str, examples: list, ref: list, ref_scored: Scored) -> dict:
    """Parity figures and task metrics of one artifact (bundle + backend) against the reference."""
    engine = Engine(bundle, backend=backend)
    tally, texts = ParityTally(), []
    t0 = time.perf_counter()
    for ex, (ref_tokens, ref_logits) in zip(examples, ref):
        result = engine.generate(ex.image, ex.prefix, max_new_tokens=MAX_NEW_TOKENS)
        tally.add(ref_logits, engine.score(ex.image, ex.prefix, ref_tokens), ref_tokens, result.tokens)
        texts.append(decode_text(engine.tokenizer, result.tokens))
    metrics, _, primary, scores = score_all(examples, texts)
    return {**tally.summary(), **task_changes(examples, ref_scored, (metrics, primary, scores)),
            "seconds": time.perf_counter() - t0}


def worse_by(metric: str, delta: float) -> float:
    """How much worse a change of `metric` (cider_d, cer, ...) is, in its units (negative: it improved)."""
    return delta if metric in LOWER_IS_BETTER else -delta


def verdict(result: dict, quant: str = "mixed", points: float = 1.0) -> list[str]:
    """One line per `quant` row: is it within `points` of float on every task metric, and is that resolved?

    A task's loss is its metric change counted worse-is-positive; its bound is the
    loss at the far end of the 95 % paired interval. "Shown" needs every bound
    within `points`; point estimates within `points` with a wider bound are
    reported as not resolved by the sample.
    """
    lines = []
    primary = result["reference"]["primary"]
    for r in result["rows"]:
        if r["quant"] != quant or r.get("source_model") not in (None, result["model"]):
            continue
        loss = {t: 100 * worse_by(primary[t], d) for t, d in r["task_metric_delta"].items()}
        bound = {t: 100 * max(worse_by(primary[t], ci["lo"]), worse_by(primary[t], ci["hi"]))
                 for t, ci in r["task_delta_ci"].items()}
        worst, loosest = max(loss, key=loss.get), max(bound, key=bound.get)
        n = r["task_delta_ci"][loosest]["n"]
        if loss[worst] > points:
            text = f"NOT within {points:g} point: {worst} loses {loss[worst]:.1f} points"
        elif bound[loosest] <= points:
            text = f"within {points:g} point on every task metric, shown at 95 %: no loss bound exceeds " \
                   f"{bound[loosest]:.1f} points ({loosest})"
        else:
            text = f"within {points:g} point on every task metric's point estimate (largest loss " \
                   f"{max(0.0, loss[worst]):.1f}, {worst}), not resolved: the 95 % bound on " \
                   f"{loosest}'s loss is {bound[loosest]:.1f} points over {n} examples"
        lines.append(f"- `{r['artifact']}`: {text}.")
    return lines


def markdown(result: dict) -> str:
    """parity.md: one row per artifact; task deltas in points (x100), cer: lower is better."""
    tasks = list(result["reference"]["task_metrics"])
    head = ["artifact", "format", "quant", "top-1", "greedy exact", "KL", "cos mean", "cos min",
            *(f"Δ {t}" for t in tasks)]
    lines = [f"Shipped model `{result['model']}`: {result['examples']} examples on {result['images']} held-out "
             f"test images; reference = float JAX model. Task deltas are metric points (x100), each with the "
             f"half-width of its 95 % paired bootstrap interval; "
             f"for {', '.join(sorted(LOWER_IS_BETTER))} lower is better.", "",
             "Reference task metrics (float JAX): " + ", ".join(
                 f"{t} {result['reference']['primary'][t]} {v:.3f}" for t, v in result["reference"]
                 ["task_metrics"].items()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        quant = r["quant"] + (" gptq" if r.get("gptq_images") else "")
        cells = [r["artifact"], r["format"], quant, f"{r['top1_agreement']:.4f}",
                 f"{r['greedy_exact_match']:.3f}", f"{r['kl']:.2e}", f"{r['cosine_mean']:.5f}",
                 f"{r['cosine_min']:.5f}", *(delta_cell(r, t) for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    gptq = sorted({r["gptq_images"] for r in result["rows"] if r.get("gptq_images")})
    notes = [f"quant `gptq`: GPTQ codes (`convert --gptq {n}`: Hessians from {n} calibration images of the suite's "
             f"seed {CALIBRATION_SEED}, none a test image)" for n in gptq]
    return "\n".join(lines + [""] + notes + ([""] if notes else []) + verdict(result)) + "\n"


def delta_cell(row: dict, task: str) -> str:
    """A task's change in points, with its 95 % half-width when the row has intervals: `+1.2 ±3.4`."""
    ci = row.get("task_delta_ci", {}).get(task)
    cell = f"{100 * row['task_metric_delta'][task]:+.1f}"
    return cell if ci is None else f"{cell} ±{50 * (ci['hi'] - ci['lo']):.1f}"


def plot(result: dict, path: Path) -> None:
    """Left: top-1 agreement and greedy exact match per artifact. Right: every task's change for each
    artifact, worse-is-down, with its 95 % interval and the +-1 point band of the mixed target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['format']}\n{r['artifact']}" for r in rows]
    x = np.arange(len(rows))
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(max(12, len(rows) * 1.8), 4.5))
    ax.bar(x - 0.2, [r["top1_agreement"] for r in rows], 0.4, label="top-1 agreement (teacher-forced)")
    ax.bar(x + 0.2, [r["greedy_exact_match"] for r in rows], 0.4, label="greedy exact match")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(min(0.5, min(min(r["top1_agreement"], r["greedy_exact_match"]) for r in rows) - 0.05), 1.01)
    ax.set_title(f"{result['model']}: agreement with the float JAX model")
    ax.legend(loc="lower left", fontsize=8)
    primary = result["reference"]["primary"]
    tasks = list(primary)
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        gain = [-100 * worse_by(primary[task], r["task_metric_delta"][task]) for r in rows]
        ends = [sorted(-100 * worse_by(primary[task], r["task_delta_ci"][task][k]) for k in ("lo", "hi"))
                for r in rows]
        err = np.array([[max(0.0, g - lo), max(0.0, hi - g)] for g, (lo, hi) in zip(gain, ends)]).T
        ax_d.errorbar(x - 0.4 + (j + 0.5) * width, gain, yerr=err, fmt="o", ms=3, capsize=2, label=task)
    ax_d.axhspan(-1, 1, color="green", alpha=0.15, label="±1 point")
    ax_d.axhline(0, color="black", lw=0.5)
    ax_d.set_xticks(x, labels, fontsize=7)
    ax_d.set_ylabel("task metric change, points (up = better)")
    ax_d.set_title("task metric change vs float, 95 % paired intervals")
    ax_d.legend(loc="lower left", fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_parity(images: int = 24, formats: tuple[str, ...] = ("onnx", "tflite"),
               artifacts: tuple[tuple[str, str, str, int], ...] = ARTIFACTS, log=print,
               workdir: Path | None = None) -> dict:
    """Convert every artifact, compare it with the float JAX model on held-out images; the result dict.

    Bundles go to `workdir/<artifact>` when given (callers reuse them), else to a temp dir.
    """
    float_model = shipped_model(DEFAULT_MODEL)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pg2edge-parity-") as scratch:
        tmp = Path(workdir or scratch)
        examples = heldout_examples(float_model, images, tmp)
        predictor = JaxPredictor.from_checkpoint(float_model.path)
        ref = reference(predictor, examples)
        ref_metrics, _, primary, ref_scores = score_all(
            examples, [decode_text(predictor.tokenizer, tokens) for tokens, _ in ref])
        ref_scored = (ref_metrics, primary, ref_scores)
        result = {"model": float_model.name, "images": images, "examples": len(examples),
                  "max_new_tokens": MAX_NEW_TOKENS, "machine": machine_info(),
                  "reference": reference_summary(ref_scored), "rows": []}
        for name, quant, model_name, gptq_images in artifacts:
            model = shipped_model(model_name)
            bundle = tmp / name
            t0 = time.perf_counter()
            convert(ConvertOptions(size=model.config.size, res=model.config.resolution, checkpoint=model.path,
                                   formats=tuple(formats), quant=quant, out=bundle, gptq_images=gptq_images,
                                   max_len=model.config.num_image_tokens + PREFILL + MAX_NEW_TOKENS,
                                   prefill=(PREFILL,)))
            convert_s = time.perf_counter() - t0
            for fmt in formats:
                row = artifact_rows(bundle, fmt, examples, ref, ref_scored)
                result["rows"].append({"artifact": f"{fmt}-{name}", "format": fmt, "quant": quant,
                                       "source_model": model_name, "gptq_images": gptq_images,
                                       "convert_s": convert_s, **row})
                log(f"{fmt:>6} {name:<9} top1 {row['top1_agreement']:.4f} "
                    f"exact {row['greedy_exact_match']:.3f} kl {row['kl']:.2e}")
    result["seconds"] = time.perf_counter() - t_start
    return result


def write_results(result: dict, out: Path, stem: str = "parity") -> list[Path]:
    """`<stem>.json`, `<stem>.md` and `<stem>.png` under `out`."""
    paths = write_report(result, markdown(result), out, stem) + [out / f"{stem}.png"]
    plot(result, paths[2])
    return paths
