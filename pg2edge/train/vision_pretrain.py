"""Stage 0 of PaliGemma's recipe in miniature: train the image tower alone, SigLIP-style, before the decoder.

PaliGemma never trains its image tower from scratch through the decoder: it starts
from a SigLIP tower pretrained contrastively on image-text pairs. A from-scratch
tower trained only through the decoder's next-token loss learns colour within
minutes but not shape; a direct loss on each image learns shape in about two
minutes (benchmarks/vision_probe.py). This is that loss: SigLIP's sigmoid loss
with the text tower reduced to one learned vector per token. An image's positives
are the tokens of every suffix written about it (captions, answers, OCR text;
`<loc>`/`<seg>` codes left out); a token's score is a soft maximum over the image
tokens of (token . vector), since a word names one object among several.

The output directory holds the full model (the tower trained, every other weight
exactly as `finetune --random-init --seed S` draws it), its config and tokenizer,
so `pg2edge finetune --checkpoint DIR` continues from it. It runs in one process
on the default device: the tower is small next to the decoder stage.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pg2edge.checkpoint.fsutil import atomic_dir
from pg2edge.config import ModelConfig
from pg2edge.model import siglip
from pg2edge.preprocess import preprocess_batch
from pg2edge.tasks import DataError, read_examples
from pg2edge.tokenizer import Tokenizer
from pg2edge.train import artifacts
from pg2edge.train.data import stream_indices
from pg2edge.train.init import from_scratch_params
from pg2edge.train.metrics import MetricsLog, ProgressBar
from pg2edge.train.options import TrainOptions
from pg2edge.train.source import resolve_config, resolve_tokenizer

RECORD = "vision_pretrain.json"


@dataclass(frozen=True)
class VisionPretrainOptions:
    """A tower pretraining run: variant, data, schedule, output directory."""

    data: Path
    out: Path
    size: str
    res: int
    steps: int
    batch: int
    lr: float = 1e-3
    warmup: float = 0.05  # fraction of `steps`
    seed: int = 0
    tokenizer: Path | None = None
    skip_bad: bool = False
    log_every: int = 50


@dataclass(frozen=True, eq=False)
class ImageWords:
    """Each distinct image of the data and the tokens said about it: positives[i, j] = image i has vocab[j]."""

    images: tuple[Path, ...]
    vocab: np.ndarray  # int32 [V]: token ids that occur as positives
    positives: np.ndarray  # float32 [N, V]
    skipped: int = 0  # bad JSONL lines dropped under skip_bad


def image_words(data: Path, tok: Tokenizer, cfg: ModelConfig, skip_bad: bool = False) -> ImageWords:
    """Group the JSONL's lines by image; an image's words are its suffixes' tokens below the `<loc>` block."""
    read = read_examples(data, skip_bad=skip_bad)
    bags: dict[Path, set[int]] = {}
    for ex in read.examples:
        ids = {i for i in tok.encode(ex.suffix) if i < cfg.text.loc_start}
        bags.setdefault(ex.image, set()).update(ids)
    vocab = np.array(sorted(set().union(*bags.values())), np.int32) if bags else np.zeros(0, np.int32)
    if vocab.size == 0:
        raise DataError(f"{data}: no suffix has a word token to pretrain the image tower on")
    column = {int(t): j for j, t in enumerate(vocab)}
    positives = np.zeros((len(bags), vocab.size), np.float32)
    for i, ids in enumerate(bags.values()):
        positives[i, [column[t] for t in ids]] = 1.0
    return ImageWords(tuple(bags), vocab, positives, len(read.problems))


def word_head(key: jax.Array, words: int, width: int) -> dict:
    """One vector per word (scaled like an embedding row) and a bias that starts low: most words are
    absent from most images."""
    return {"words": jax.random.normal(key, (words, width)) / math.sqrt(width), "bias": jnp.full((words,), -2.0)}


def word_logits(cfg: ModelConfig, theta: dict, pixels: jax.Array) -> jax.Array:
    """[B, V] scores: a soft maximum over image tokens of (projected token . word vector), plus a bias."""
    tokens = siglip.encode(theta["img"], cfg.vision, pixels)
    scores = jnp.einsum("btd,wd->btw", tokens, theta["words"])
    return jax.nn.logsumexp(scores, axis=1) - math.log(scores.shape[1]) + theta["bias"]


def _step_fn(cfg: ModelConfig, optimizer: optax.GradientTransformation) -> Callable:
    def loss_fn(theta: dict, pixels: jax.Array, positives: jax.Array) -> jax.Array:
        return optax.sigmoid_binary_cross_entropy(word_logits(cfg, theta, pixels), positives).mean()

    @jax.jit
    def step(theta: dict, opt_state: optax.OptState, pixels: jax.Array, positives: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(theta, pixels, positives)
        updates, opt_state = optimizer.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss

    return step


def _check(opts: VisionPretrainOptions) -> None:
    for name in ("steps", "batch", "log_every"):
        if getattr(opts, name) < 1:
            raise DataError(f"--{name.replace('_', '-')}: expected a positive integer, found {getattr(opts, name)}")
    if not opts.lr > 0 or not 0 <= opts.warmup < 1:
        raise DataError(f"--lr must be > 0 and --warmup in [0, 1), found {opts.lr} and {opts.warmup}")


def pretrain_vision(opts: VisionPretrainOptions, log: Callable[[str], None] = lambda message: None,
                    progress: bool = True) -> dict:
    """Train the tower on `opts.data`, write the whole model to `opts.out` atomically; returns the run record."""
    _check(opts)
    started = time.perf_counter()
    with atomic_dir(opts.out) as tmp:  # refuses an existing OUT before any work
        as_finetune = TrainOptions(data=opts.data, out=opts.out, steps=opts.steps, batch=opts.batch,
                                   size=opts.size, res=opts.res, random_init=True, tokenizer=opts.tokenizer,
                                   seed=opts.seed)
        cfg = resolve_config(as_finetune)
        tok = resolve_tokenizer(as_finetune, cfg)
        words = image_words(Path(opts.data), tok, cfg, opts.skip_bad)
        skipped = f", {words.skipped} bad lines skipped" if words.skipped else ""
        log(f"{opts.data}: {len(words.images)} images, {words.vocab.size} word tokens{skipped}")
        params = from_scratch_params(cfg, jax.random.PRNGKey(opts.seed))  # finetune --random-init's draw
        theta, records, compile_s = _train(opts, cfg, words, params["img"], progress, tmp)
        params["img"] = theta["img"]
        artifacts.write_model(tmp, params, cfg)
        artifacts.write_tokenizer(tmp, tok)
        record = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
                  "variant": cfg.name, "images": len(words.images), "word_tokens": int(words.vocab.size),
                  "skipped_lines": words.skipped,
                  "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
                  "compile_s": round(compile_s, 2), "seconds": round(time.perf_counter() - started, 1)}
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def _train(opts: VisionPretrainOptions, cfg: ModelConfig, words: ImageWords, img: dict, progress: bool,
           out: Path) -> tuple[dict, list[dict], float]:
    """(trained tower + word vectors, logged records, seconds of the first step); metrics go to out/metrics.jsonl."""
    theta = {"img": img, **word_head(jax.random.PRNGKey(opts.seed + 1), words.vocab.size, cfg.text.width)}
    schedule = optax.warmup_cosine_decay_schedule(0.0, opts.lr, int(opts.warmup * opts.steps), opts.steps)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = optimizer.init(theta)
    step = _step_fn(cfg, optimizer)
    records, compile_s = [], 0.0
    with MetricsLog(out) as metrics, \
            ProgressBar(opts.steps, 0, enabled=progress, label="pretrain-vision") as bar:
        clock = time.perf_counter()
        for i in range(1, opts.steps + 1):
            pick = stream_indices(opts.seed, len(words.images), (i - 1) * opts.batch, opts.batch)
            pixels = preprocess_batch([words.images[j] for j in pick], cfg.resolution)
            theta, opt_state, loss = step(theta, opt_state, jnp.asarray(pixels), jnp.asarray(words.positives[pick]))
            if i == 1:
                compile_s = time.perf_counter() - clock
            if i == 1 or i % opts.log_every == 0 or i == opts.steps:
                record = {"step": i, "loss": float(loss), "examples_seen": i * opts.batch,
                          "steps_per_s": i / (time.perf_counter() - clock)}
                metrics.write(record)
                records.append(record)
                bar.update(i, record)
    return theta, records, compile_s
