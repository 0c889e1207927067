"""The `pg2edge` command: one subcommand per job in DESIGN §1.

Every `Pg2EdgeError` becomes one `error: ...` line on stderr and exit code 2;
heavy imports (jax, tensorflow) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import click

from pg2edge.cpu_devices import split_cpu_for_training
from pg2edge.errors import Pg2EdgeError
from pg2edge.progress import RichProgress
from pg2edge.stop import stop_on_sigterm


def _one_line_errors(fn: Callable) -> Callable:
    """Turn pg2edge's typed errors into one line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Pg2EdgeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="pg2edge")
def main() -> None:
    """pg2edge: PaliGemma 2 -> ONNX / TFLite bundles for phones and single-board computers."""
    # The CLI owns its process: keep TensorFlow's C++ warnings and ai-edge-quantizer's
    # internal tqdm bars out of pg2edge's own progress display (a user's setting wins).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")
    stop_on_sigterm()  # `kill` (SIGTERM) unwinds like Ctrl-C: staging directories are removed on the way out


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@_one_line_errors
def inspect(checkpoint: str) -> None:
    """Print a checkpoint's format, variant, parameter count and dtypes."""
    from pg2edge.checkpoint import describe

    info = describe(checkpoint)
    shown = dict(info, parameters=f"{info['parameters']:,}",
                 dtypes=", ".join(f"{name} x{count}" for name, count in info["dtypes"].items()),
                 file_bytes=f"{info['file_bytes']:,} ({info['file_bytes'] / 2**20:.1f} MiB)")
    click.echo("\n".join(f"{key:>19}: {value}" for key, value in shown.items()))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--images", type=click.IntRange(1, 80), default=24, show_default=True,
              help="held-out test images to score (about 4-5 examples each)")
@click.option("--quant", "quants", default="f32,int8,int4", show_default=True, help="comma list")
@click.option("--format", "formats", default="onnx,tflite", show_default=True, help="comma list")
@_one_line_errors
def demo(out: Path, images: int, quants: str, formats: str) -> None:
    """Convert the shipped trained tiny model, score every artifact on held-out images, write report.html."""
    from pg2edge.demo import run_demo

    run_demo(out, images, _names(quants), _names(formats))


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _comma_list(_ctx, _param, value: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in value.split(",")) if value else None  # empty names left for validate()


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, found {value!r}") from None


@main.command()
@click.option("--size", required=True, help="3B, 10B, 28B or tiny")
@click.option("--res", type=int, default=None, help="224, 448, 896 (tiny: 56, 112, 224)")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None)
@click.option("--random-init", is_flag=True, help="deterministic random weights (the manifest says so)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None)
@click.option("--vae", type=click.Path(path_type=Path), default=None, help="big_vision vae-oid.npz: adds mask decoding")
@click.option("--format", "formats", default="onnx", show_default=True, help="comma list: onnx,tflite")
@click.option("--quant", default="int4", show_default=True, help="f32, int8, int4 or mixed")
@click.option("--block", type=int, default=32, show_default=True, help="int4 block size: 32, 64, 128")
@click.option("--int4-clip", type=click.Choice(["mse", "max"]), default="mse", show_default=True,
              help="int4 scales: mse = searched per block for least error (what --qat int4 trains against), "
                   "max = max|w| / 7 (a faster conversion)")
@click.option("--accuracy-level", type=int, default=4, show_default=True,
              help="4 = int8 activations in the kernels (fast), 0 = float activations, equal to the reference "
                   "(ONNX MatMulNBits; TFLite per-channel weights, held in float at run time: small models only)")
@click.option("--gptq", type=int, default=0, help="GPTQ codes from N suite calibration images (small models)")
@click.option("--max-len", type=int, default=1024, show_default=True, help="KV cache capacity")
@click.option("--prefill", default="512", show_default=True, callback=_int_list,
              help="comma list of prompt-token buckets (after the image tokens)")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--force", is_flag=True, help="replace an existing --out")
@click.option("--report", is_flag=True,
              help="write quant_report.json/.md: per-tensor weight error and output error on a calibration batch")
@_one_line_errors
def convert(size, res, checkpoint, random_init, seed, tokenizer, vae, formats, quant, block, int4_clip,
            accuracy_level, gptq, max_len, prefill, out, force, report) -> None:
    """Convert a checkpoint into an ONNX / TFLite bundle with quantized weights."""
    from rich.console import Console
    from rich.table import Table

    from pg2edge.export.convert import ConvertOptions
    from pg2edge.export.convert import convert as run_convert

    opts = ConvertOptions(size=size, res=res, checkpoint=checkpoint, random_init=random_init, seed=seed,
                          tokenizer=tokenizer, vae=vae,
                          formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                          quant=quant, block=block, int4_clip=int4_clip, accuracy_level=accuracy_level,
                          gptq_images=gptq, max_len=max_len, prefill=prefill, out=out, force=force, report=report)
    with RichProgress() as progress:
        result = run_convert(opts, progress=progress)
    table = Table(title=f"{out} ({result.seconds:.1f} s)")
    for col in ("format", "quant", "files", "MiB", "seconds"):
        table.add_column(col)
    for row in result.rows:
        table.add_row(row["format"], row["quant"], ", ".join(row["files"]), f"{row['bytes'] / 2**20:.1f}",
                      f"{row['seconds']:.1f}")
    Console().print(table)
    for note in result.notes:
        click.echo(note, err=True)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--image", "images", multiple=True, required=True, type=click.Path(path_type=Path),
              help="an image file; repeat for several")
@click.option("--prompt", required=True, help="e.g. 'caption en', 'detect cat ; dog', 'segment cat'")
@click.option("--backend", type=click.Choice(["onnx", "tflite"]), default=None)
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image")
@click.option("--draw", type=click.Path(path_type=Path), default=None, help="write the image with boxes/masks")
@click.option("--low-memory", is_flag=True,
              help="load each part only while it runs (less RAM, slower: parts reload every image)")
@_one_line_errors
def run(bundle, images, prompt, backend, max_new_tokens, temperature, top_k, top_p, seed, as_json, draw,
        low_memory) -> None:
    """Run a bundle on images: caption, answer, detect, segment, ocr."""
    import json

    from pg2edge.runtime.engine import Engine
    from pg2edge.sampling import SamplingConfig

    try:
        sampling = SamplingConfig(temperature, top_k, top_p, seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    engine = Engine(bundle, backend=backend, low_memory=low_memory)
    results = engine.generate_many(list(images), prompt, max_new_tokens=max_new_tokens, sampling=sampling)
    failed = 0
    for path, result in zip(images, results):
        if isinstance(result, Pg2EdgeError):
            failed += 1
            click.echo(f"error: {path}: {result}", err=True)
            continue
        if draw is not None:
            from pg2edge.runtime.draw import draw_objects

            target = draw if len(images) == 1 else draw.with_name(f"{draw.stem}_{Path(path).stem}{draw.suffix}")
            draw_objects(path, result.objects, target)
        if as_json:
            click.echo(json.dumps(result.to_dict(str(path))))
        else:
            click.echo(f"{path}: {result.text}")
            t = result.timings
            click.echo(f"  [{result.stop_reason}; vision {t.vision_ms:.0f} ms, prefill {t.prefill_ms:.0f} ms, "
                       f"decode {t.decode_tok_s:.1f} tok/s]", err=True)
    if failed:
        sys.exit(2)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="suite directory to create")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="number of images")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--res", type=click.IntRange(56, 1024), default=224, show_default=True, help="image side in pixels")
@click.option("--layout", type=click.Choice(["grid", "free"]), default="grid", show_default=True,
              help="grid: shapes and glyphs snap to an 8x8 grid of cells (one 14 px patch at 112 px); "
                   "free: anywhere (harder: for a pretrained image tower)")
@click.option("--force", is_flag=True, help="replace an existing --out")
@_one_line_errors
def tasks(out: Path, n: int, seed: int, res: int, layout: str, force: bool) -> None:
    """Write the synthetic task suite: PNGs, train/val/test JSONL (prefix -> suffix) and meta.json."""
    from pg2edge.tasks import SuiteConfig, write_suite

    summary = write_suite(out, SuiteConfig(n=n, seed=seed, res=res, layout=layout), force=force)
    split_text = ", ".join(f"{s} {summary.images[s]} images / {summary.examples[s]} examples" for s in summary.images)
    click.echo(f"{out}: {split_text} ({summary.seconds:.1f} s)")
    click.echo("tasks: " + ", ".join(f"{task} {count}" for task, count in summary.tasks.items()))
    click.echo(f"train_simple.jsonl: {summary.simple_train} train examples of one-object images")


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="starting weights: .npz, HF safetensors, or an earlier finetune OUT dir")
@click.option("--size", default=None, help="with --random-init: 3B, 10B, 28B or tiny")
@click.option("--res", type=int, default=None, help="with --random-init: 224, 448, 896 (tiny: 56, 112, 224)")
@click.option("--random-init", is_flag=True, help="start from deterministic random weights (seeded)")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help='JSONL: {"image": path relative to the file, "prefix": ..., "suffix": ...} per line')
@click.option("--steps", type=int, required=True, help="optimizer steps")
@click.option("--batch", type=int, required=True, help="examples per micro-batch (per step: batch x accum)")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="peak learning rate")
@click.option("--warmup", type=float, default=0.1, show_default=True, help="linear warmup, fraction of --steps")
@click.option("--wd", "weight_decay", type=float, default=0.0, show_default=True, help="AdamW weight decay")
@click.option("--accum", type=int, default=1, show_default=True, help="micro-batches per optimizer step")
@click.option("--dtype", type=click.Choice(["f32", "bf16"]), default="f32", show_default=True,
              help="compute dtype (master weights and Adam state stay f32)")
@click.option("--trainable", type=click.Choice(["all", "attn", "decoder", "lora"]), default="all", show_default=True)
@click.option("--lora-rank", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=float, default=16.0, show_default=True)
@click.option("--qat", type=click.Choice(["int4", "int8", "mixed"]), default=None,
              help="train through the fake-quant of this convert --quant recipe")
@click.option("--qat-block", type=int, default=32, show_default=True, help="int4 block (match convert --block)")
@click.option("--distill", type=float, default=0.0, show_default=True,
              help="weight in [0, 1] of KL to the --checkpoint model's predictions (QAT: stay close to float)")
@click.option("--eval-every", type=int, default=0, show_default=True, help="steps between evals (0: end only)")
@click.option("--eval-data", type=click.Path(path_type=Path), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-text-len", type=int, default=64, show_default=True, help="text tokens per example")
@click.option("--sort-window", type=int, default=1, show_default=True, help="steps sorted by text length as one")
@click.option("--skip-bad", is_flag=True, help="skip (and count) bad JSONL lines instead of stopping")
@click.option("--balance-tasks", is_flag=True,
              help='draw every task (the lines\' "task" field) equally often, not in proportion to its lines')
@click.option("--tasks", callback=_comma_list, default=None, help="comma list: train on these tasks' lines only")
@click.option("--repeat-rare", callback=_comma_list, default=None,
              help="comma list: repeat those tasks' rare answers (2 boxes, a count of 3) by sqrt(how much rarer)")
@click.option("--task-weights", default=None,
              help="TASK=W,...: balance the tasks, each drawn in proportion to W (default 1); e.g. ocr=2")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="SentencePiece model (default: the synthetic one); copied to OUT/tokenizer.model")
@click.option("--save-every", type=int, default=500, show_default=True, help="checkpoint interval (and at the end)")
@click.option("--log-every", type=int, default=1, show_default=True)
@click.option("--fsdp", type=int, default=None, help="devices per FSDP group (default: devices per host; 1 on CPU)")
@click.option("--distributed", is_flag=True, help="multi-host: call jax.distributed.initialize() first")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="run directory; if it holds a checkpoint, training resumes from it")
@_one_line_errors
def finetune(distributed: bool, **options) -> None:
    """Fine-tune (or resume) on JSONL data; writes OUT/params.npz, tokenizer.model, config.json, metrics.jsonl."""
    if distributed:
        import jax

        jax.distributed.initialize()
    else:
        split_cpu_for_training(options["batch"])
    from pg2edge.train import TrainOptions
    from pg2edge.train import finetune as run_finetune
    from pg2edge.train.options import parse_task_weights

    options["task_weights"] = parse_task_weights(options["task_weights"])
    result = run_finetune(TrainOptions(**options), log=lambda message: click.echo(message, err=True))
    click.echo(result.summary())
    click.echo(f"convert with: pg2edge convert --size {result.cfg.size} --res {result.cfg.resolution} "
               f"--checkpoint {result.params_path} --tokenizer {result.out / 'tokenizer.model'} --out BUNDLE")


@main.command("pretrain-vision")
@click.option("--size", required=True, help="variant to build (e.g. mini)")
@click.option("--res", type=int, default=None, help="input resolution (default: the variant's)")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="JSONL of the finetune format; each image's suffixes give its words")
@click.option("--steps", type=click.IntRange(min=1), required=True)
@click.option("--batch", type=click.IntRange(min=1), required=True, help="images per step")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="peak learning rate")
@click.option("--warmup", type=float, default=0.05, show_default=True, help="linear warmup, fraction of --steps")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="the random init of every weight, as finetune --random-init --seed draws it")
@click.option("--region-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="weight of the region term (the token under each labelled box's centre scores its label)")
@click.option("--box-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="weight of the box term (the token under each box's centre scores its <loc> edges)")
@click.option("--box-sigma", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="width of the box term's soft target, in <loc> bins")
@click.option("--glyph-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="weight of the glyph term (CTC of each ocr line's characters over the tokens in reading order)")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="SentencePiece model (default: the synthetic one); copied to OUT/tokenizer.model")
@click.option("--skip-bad", is_flag=True, help="skip (and count) bad JSONL lines instead of stopping")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="new directory for the model")
@_one_line_errors
def pretrain_vision(**options) -> None:
    """Train the image tower alone (SigLIP-style loss on each image's words); OUT starts `finetune --checkpoint`."""
    split_cpu_for_training(options["batch"])
    from pg2edge.train.vision_pretrain import VisionPretrainOptions
    from pg2edge.train.vision_pretrain import pretrain_vision as run_pretrain

    opts = VisionPretrainOptions(**options)
    record = run_pretrain(opts, log=lambda message: click.echo(message, err=True))
    click.echo(f"{opts.out}: {record['variant']} image tower, {opts.steps} steps on {record['images']} images "
               f"({record['word_tokens']} word tokens), loss {record['first_loss']:.4f} -> {record['final_loss']:.4f}, "
               f"{record['seconds']:.0f} s")
    click.echo(f"continue with: pg2edge finetune --checkpoint {opts.out} --data JSONL --steps N --batch B --out DIR")


@main.command("eval")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help='suite JSONL: {"image", "prefix", "suffix", "task"} per line (pg2edge tasks writes these)')
@click.option("--dataset", "dataset_spec", default=None,
              help="KIND:PATH...: suite:JSONL | coco:CAPTIONS_JSON:IMAGE_DIR | "
                   "vqav2:QUESTIONS_JSON:ANNOTATIONS_JSON:IMAGE_DIR | refcoco:REFS_JSON:IMAGE_DIR[:SPLIT]")
@click.option("--backend", type=click.Choice(["onnx", "tflite"]), default=None, help="bundles only")
@click.option("--size", default=None, help="checkpoints only: check the variant (3B, 10B, 28B, tiny)")
@click.option("--res", type=int, default=None, help="checkpoints only: check the resolution")
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="checkpoints only (default: a run dir's tokenizer.model, else convert's synthetic one)")
@click.option("--tasks", "task_list", default="", help="comma list of tasks to keep (default: all)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="evaluate the first N examples")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="examples per JAX generate call (bundles run one at a time)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="write the metrics as JSON")
@click.option("--predictions", "predictions_out", type=click.Path(path_type=Path), default=None,
              help="write every prediction, its references and score as JSONL")
@_one_line_errors
def eval_(target, data, dataset_spec, backend, size, res, tokenizer, task_list, limit, batch, max_new_tokens,
          json_out, predictions_out) -> None:
    """Task metrics of a bundle or checkpoint (the float JAX baseline): CIDEr-D, VQA acc, IoU, mIoU, CER."""
    from rich.console import Console
    from rich.table import Table

    from pg2edge.eval import evaluate, load_dataset, load_suite, open_predictor, select
    from pg2edge.tasks.errors import DataError

    if (data is None) == (dataset_spec is None):
        raise DataError("give exactly one of --data JSONL or --dataset KIND:PATH")
    examples = load_suite(data) if data is not None else load_dataset(dataset_spec)
    examples = select(examples, tuple(t.strip() for t in task_list.split(",") if t.strip()), limit)
    if not examples:
        raise DataError(f"{data or dataset_spec}: no examples to evaluate")
    predictor = open_predictor(target, backend=backend, size=size, res=res, tokenizer=tokenizer)
    with RichProgress() as progress:
        report = evaluate(predictor, examples, batch=batch, max_new_tokens=max_new_tokens, progress=progress,
                          dataset=str(data or dataset_spec))
    if json_out is not None:
        report.write_json(json_out)
    if predictions_out is not None:
        report.write_predictions(predictions_out)
    table = Table(title=f"{report.target} on {report.dataset} ({sum(report.counts.values())} examples, "
                        f"{report.seconds:.1f} s)")
    for col in ("task", "n", "metric", "value", "other"):
        table.add_column(col)
    for task, n, name, value, others in report.rows():
        table.add_row(task, str(n), name, f"{value:.4f}", others)
    Console().print(table)


@main.command()
@click.option("--quick", is_flag=True, help="the shipped tiny model only: parity + speed in a few minutes (default)")
@click.option("--full", is_flag=True, help="also random-init 3B-224: conversion, memory, speed, roofline (about an "
                                          "hour, ~10 GB RAM)")
@click.option("--peers", default="", help="with --full: comma list of llamacpp,ortgenai,hf,litert (needs "
                                          "benchmarks/peers/setup.sh's .venv-peers)")
@click.option("--images", type=click.IntRange(1, 80), default=4, show_default=True,
              help="held-out test images for the parity rows")
@click.option("--format", "formats", default="onnx,tflite", show_default=True, help="comma list")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench_out"), show_default=True)
@_one_line_errors
def bench(quick: bool, full: bool, peers: str, images: int, formats: str, out: Path) -> None:
    """Accuracy parity and speed (JSON + markdown under --out), with the machine they ran on."""
    from pg2edge.bench.quick import QUICK_JSON, QUICK_MD, run_quick

    if peers and not full:
        raise click.UsageError("--peers needs --full")
    run_quick(out, images, _names(formats), log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {out / QUICK_JSON} and {out / QUICK_MD}")
    if full:
        from pg2edge.bench.full_size import run_full_size

        paths = run_full_size(out, peers=_names(peers))
        click.echo("wrote " + " and ".join(map(str, paths)))


if __name__ == "__main__":
    main()
