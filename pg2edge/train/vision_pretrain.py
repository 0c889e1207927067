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

Where a suffix places objects (`<locY0><locX0><locY1><locX1> label`, the detection
and segmentation format), a region term adds what the bag cannot say: *which*
image token each label belongs to. The token of the patch under a box's centre is
scored against every word, each label word with a softmax over itself and the words
not in the label, as LocCa / SigLIP 2 add location-aware objectives to SigLIP's. Without it the tower
learns colour per token but shape only as a property of the image (a linear probe
on the centre tokens of objects in multi-object images: shape 0.51 with the bag
alone, 0.98 with the region term, 800 steps of 64; benchmarks/tower_probe.py); the
decoder cannot look up "the star" in tokens that do not say which one is the star.

A box term makes the same token say where its object's edges are: through one
learned map per edge (discarded afterwards), it scores the `<loc>` bins with the
decoder's fixed ordinal `<loc>` rows (`init.ordinal_loc_rows`) against a Gaussian
a few bins wide around each true edge. A decoder reading a box off its tokens then
learns to write it in one short stage: after 800 steps on the `detect` lines (tower
frozen), 0.79 of test boxes at IoU >= 0.5 with it and 0.41 without.

A glyph term (`glyph_ctc`, off unless `glyph_weight` > 0) makes the tokens of a text
image say which character each shows, by CTC of its `ocr` line over the tokens in
reading order. CTC alone does not start (the tower's own reading of the test texts
stays at a character error rate of 0.99 without the region and box terms); with them
it depends on the learning rate: 800 steps of 64 at weight 1 read at 0.26 with lr
1e-3 and 0.001 with 3e-3, which also lowers the region and box terms
(benchmarks/tower_glyph_probe.py).

The output directory holds the full model (the tower trained, every other weight
exactly as `finetune --random-init --seed S` draws it), its config and tokenizer,
so `pg2edge finetune --checkpoint DIR` continues from it. It runs in one process
on the default device: the tower is small next to the decoder stage.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from pg2edge.checkpoint.fsutil import atomic_dir
from pg2edge.config import ModelConfig
from pg2edge.model import siglip
from pg2edge.postprocess import LOC_DENOMINATOR, parse_objects
from pg2edge.tasks import DataError, read_examples
from pg2edge.tokenizer import Tokenizer
from pg2edge.train import artifacts
from pg2edge.train.data import AHEAD_WINDOW, prefetched, stream_indices, stream_windows
from pg2edge.train.decoded import WARM_WORKERS, DecodedImages
from pg2edge.train.glyph_ctc import GlyphLabels, glyph_head, glyph_labels, glyph_loss, write_head
from pg2edge.train.init import from_scratch_params, ordinal_loc_rows
from pg2edge.train.metrics import MetricsLog, ProgressBar
from pg2edge.train.optim import CLIP_NORM, lr_schedule
from pg2edge.train.options import TrainOptions
from pg2edge.train.sharding import DATA, make_mesh, replicated
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
    region_weight: float = 1.0  # weight of the region term (0: the image-level bag alone)
    box_weight: float = 1.0  # weight of the box term (0: none)
    box_sigma: float = 8.0  # width, in <loc> bins, of the box term's soft target
    glyph_weight: float = 0.0  # weight of the glyph term (glyph_ctc; 0: none)


@dataclass(frozen=True, eq=False)
class ImageWords:
    """Each distinct image of the data and the tokens said about it: positives[i, j] = image i has vocab[j]."""

    images: tuple[Path, ...]
    vocab: np.ndarray  # int32 [V]: token ids that occur as positives
    positives: np.ndarray  # float32 [N, V]
    region_cells: np.ndarray  # int32 [N, R]: image tokens under labelled box centres, -1 = none
    region_words: np.ndarray  # uint8 [N, R, V]: the words of the labels placed at that token
    region_bins: np.ndarray  # int32 [N, R, 4]: <loc> bins (y0, x0, y1, x1) of that token's box, -1 = none
    texts: tuple[str | None, ...]  # what each image's `ocr` line reads (None: no such line)
    skipped: int = 0  # bad JSONL lines dropped under skip_bad


def centre_cell(box_xyxy: tuple[float, float, float, float], cfg: ModelConfig) -> int:
    """Index of the image token (row-major patch) under a box's centre, in model-input pixels."""
    grid, patch = cfg.vision.grid, cfg.vision.patch_size
    x0, y0, x1, y1 = box_xyxy
    row, col = (min(max(int((a + b) / 2 // patch), 0), grid - 1) for a, b in ((y0, y1), (x0, x1)))
    return row * grid + col


def _regions(suffix: str, tok: Tokenizer, cfg: ModelConfig) -> Iterator[tuple[int, set[int], tuple[int, ...]]]:
    """(centre cell, label word tokens, <loc> bins y0 x0 y1 x1) of every labelled box the suffix places; a
    label is encoded as it stands in the suffix, after a space."""
    res = cfg.resolution
    for obj in parse_objects(suffix, (res, res)):
        ids = {i for i in tok.encode(" " + obj.label) if i < cfg.text.loc_start}
        if ids:
            x0, y0, x1, y1 = obj.box
            bins = tuple(int(round(v / res * LOC_DENOMINATOR)) for v in (y0, x0, y1, x1))  # parse_objects, undone
            yield centre_cell(obj.box, cfg), ids, bins


def image_words(data: Path, tok: Tokenizer, cfg: ModelConfig, skip_bad: bool = False) -> ImageWords:
    """Group the JSONL's lines by image; an image's words are its suffixes' tokens below the `<loc>` block,
    its regions the cells under the centres of the boxes its suffixes place, each with the words of every
    label placed there ("white star" from a detect line and "star" from a segment line: both words)."""
    read = read_examples(data, skip_bad=skip_bad)
    bags: dict[Path, set[int]] = {}
    regions: dict[Path, dict[int, set[int]]] = {}
    boxes: dict[Path, dict[int, tuple[int, ...]]] = {}
    texts: dict[Path, str] = {}
    for ex in read.examples:
        ids = {i for i in tok.encode(ex.suffix) if i < cfg.text.loc_start}
        bags.setdefault(ex.image, set()).update(ids)
        if ex.prefix.strip() == "ocr":
            texts.setdefault(ex.image, ex.suffix)
        cells = regions.setdefault(ex.image, {})
        for cell, label, bins in _regions(ex.suffix, tok, cfg):
            cells.setdefault(cell, set()).update(label)
            boxes.setdefault(ex.image, {}).setdefault(cell, bins)
    labels = {t for cells in regions.values() for ids in cells.values() for t in ids}
    vocab = np.array(sorted(labels.union(*bags.values())), np.int32)
    if vocab.size == 0:
        raise DataError(f"{data}: no suffix has a word token to pretrain the image tower on")
    column = {int(t): j for j, t in enumerate(vocab)}
    positives = np.zeros((len(bags), vocab.size), np.float32)
    most = max((len(r) for r in regions.values()), default=0)
    cells = np.full((len(bags), most), -1, np.int32)
    region_words = np.zeros((len(bags), most, vocab.size), np.uint8)
    region_bins = np.full((len(bags), most, 4), -1, np.int32)
    for i, (image, ids) in enumerate(bags.items()):
        positives[i, [column[t] for t in ids]] = 1.0
        for r, (cell, label) in enumerate(sorted(regions[image].items())):
            cells[i, r] = cell
            region_words[i, r, [column[t] for t in label]] = 1
            region_bins[i, r] = boxes[image][cell]
    return ImageWords(tuple(bags), vocab, positives, cells, region_words, region_bins,
                      tuple(texts.get(image) for image in bags), len(read.problems))


def word_head(key: jax.Array, words: int, width: int) -> dict:
    """One vector per word (scaled like an embedding row) and a bias that starts low: most words are
    absent from most images. (The bias is float32, not weakly typed: a weak one changes type after the first
    update and the step compiles twice.)"""
    return {"words": jax.random.normal(key, (words, width)) / math.sqrt(width),
            "bias": jnp.full((words,), -2.0, jnp.float32)}


def centre_tokens(tokens: jax.Array, cells: jax.Array) -> jax.Array:
    """[B, R, D]: the token at each region's cell (cell -1, no region, reads token 0; its term masks it)."""
    return jnp.take_along_axis(tokens, jnp.maximum(cells, 0)[..., None], axis=1)


def box_head(key: jax.Array, width: int) -> jax.Array:
    """One [width, width] map per box edge (y0, x0, y1, x1), from a token to the `<loc>` rows' space."""
    return jax.random.normal(key, (4, width, width)) / math.sqrt(width)


def box_loss(tokens: jax.Array, box: jax.Array, loc_rows: jax.Array, cells: jax.Array, bins: jax.Array,
             sigma: float) -> jax.Array:
    """Mean over boxed regions and edges of the cross-entropy between the `<loc>` distribution that the
    token under the box centre scores through `box` against the fixed ordinal `<loc>` rows, and a Gaussian
    of width `sigma` bins around the edge's bin; 0 when the batch has no box."""
    picked = centre_tokens(tokens, cells)  # [B, R, D]
    logits = jnp.einsum("brd,kde,ve->brkv", picked, box, loc_rows)  # [B, R, 4, 1024]
    grid = jnp.arange(loc_rows.shape[0], dtype=jnp.float32)
    target = jax.nn.softmax(-0.5 * ((grid - bins[..., None].astype(jnp.float32)) / sigma) ** 2, axis=-1)
    per_edge = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)  # [B, R, 4]
    used = (cells >= 0).astype(jnp.float32)  # a region always has its box
    return jnp.sum(per_edge.mean(-1) * used) / jnp.maximum(used.sum(), 1.0)


def word_logits(cfg: ModelConfig, theta: dict, pixels: jax.Array) -> jax.Array:
    """[B, V] scores: a soft maximum over image tokens of (projected token . word vector), plus a bias."""
    return _pooled(siglip.encode(theta["img"], cfg.vision, pixels), theta)


def _pooled(tokens: jax.Array, theta: dict) -> jax.Array:
    scores = jnp.einsum("btd,wd->btw", tokens, theta["words"])
    return jax.nn.logsumexp(scores, axis=1) - math.log(scores.shape[1]) + theta["bias"]


def tower_optimizer(lr: float, steps: int, warmup: float) -> optax.GradientTransformation:
    """Adam on finetune's schedule (`optim.lr_schedule`) and clip norm; the tower stage takes no weight decay."""
    return optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.adam(lr_schedule(lr, steps, warmup)))


def region_loss(tokens: jax.Array, theta: dict, cells: jax.Array, region_words: jax.Array) -> jax.Array:
    """Mean over labelled regions of a multi-positive softmax cross-entropy of the token under the box
    centre (scored as the bag scores it): each of its label words against all words that are not its label
    words, so "star" competes with "circle" at full strength instead of sharing its target with "white";
    0 when the batch has no region."""
    valid = (cells >= 0).astype(jnp.float32)  # [B, R]
    picked = centre_tokens(tokens, cells)  # [B, R, D]
    logits = jnp.einsum("brd,wd->brw", picked, theta["words"]) + theta["bias"]
    positive = region_words > 0
    negatives = jax.nn.logsumexp(jnp.where(positive, -jnp.inf, logits), axis=-1, keepdims=True)
    per_word = jnp.logaddexp(logits, negatives) - logits  # -log p(word | word or a negative)
    count = positive.sum(-1)
    per_region = jnp.sum(jnp.where(positive, per_word, 0.0), -1) / jnp.maximum(count, 1)
    used = valid * (count > 0)
    return jnp.sum(per_region * used) / jnp.maximum(used.sum(), 1.0)


def _step_fn(cfg: ModelConfig, optimizer: optax.GradientTransformation, opts: VisionPretrainOptions) -> Callable:
    loc_rows = ordinal_loc_rows(cfg.text)

    def loss_fn(theta: dict, batch: dict) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        tokens = siglip.encode(theta["img"], cfg.vision, batch["pixels"])
        cells = batch["cells"]
        bag = optax.sigmoid_binary_cross_entropy(_pooled(tokens, theta), batch["positives"]).mean()
        region = region_loss(tokens, theta, cells, batch["region_words"])
        zero = jnp.zeros(())
        boxes = box_loss(tokens, theta["box"], loc_rows, cells, batch["bins"], opts.box_sigma) \
            if opts.box_weight else zero
        glyphs = glyph_loss(tokens, theta["glyph"], batch["labels"], batch["paddings"], batch["has_text"]) \
            if opts.glyph_weight else zero
        total = bag + opts.region_weight * region + opts.box_weight * boxes + opts.glyph_weight * glyphs
        return total, (bag, region, boxes, glyphs)

    @jax.jit
    def step(theta: dict, opt_state: optax.OptState, batch: dict):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(theta, batch)
        updates, opt_state = optimizer.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss, parts

    return step


def _check(opts: VisionPretrainOptions) -> None:
    for name in ("steps", "batch", "log_every"):
        if getattr(opts, name) < 1:
            raise DataError(f"--{name.replace('_', '-')}: expected a positive integer, found {getattr(opts, name)}")
    if not opts.lr > 0 or not 0 <= opts.warmup < 1:
        raise DataError(f"--lr must be > 0 and --warmup in [0, 1), found {opts.lr} and {opts.warmup}")
    for name in ("region_weight", "box_weight", "glyph_weight"):
        if not getattr(opts, name) >= 0:
            raise DataError(f"--{name.replace('_', '-')} must be >= 0, found {getattr(opts, name)}")
    if not opts.box_sigma > 0:
        raise DataError(f"--box-sigma must be > 0 (bins), found {opts.box_sigma}")


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
        regions = int((words.region_cells >= 0).sum())
        log(f"{opts.data}: {len(words.images)} images, {words.vocab.size} word tokens, "
            f"{regions} labelled regions{skipped}")
        params = from_scratch_params(cfg, jax.random.PRNGKey(opts.seed))  # finetune --random-init's draw
        glyphs = glyph_labels(words.texts)
        theta, records, compile_s = _train(opts, cfg, words, glyphs, params["img"], progress, tmp)
        params["img"] = theta["img"]
        artifacts.write_model(tmp, params, cfg)
        artifacts.write_tokenizer(tmp, tok)
        if "glyph" in theta:
            write_head(tmp, theta["glyph"], glyphs.charset)
        record = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
                  "variant": cfg.name, "images": len(words.images), "word_tokens": int(words.vocab.size),
                  "regions": regions,
                  "skipped_lines": words.skipped,
                  "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
                  "compile_s": round(compile_s, 2), "seconds": round(time.perf_counter() - started, 1)}
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def _train(opts: VisionPretrainOptions, cfg: ModelConfig, words: ImageWords, glyphs: GlyphLabels, img: dict,
           progress: bool, out: Path) -> tuple[dict, list[dict], float]:
    """(trained tower + word vectors, logged records, seconds of the first step); metrics go to out/metrics.jsonl."""
    theta = {"img": img, **word_head(jax.random.PRNGKey(opts.seed + 1), words.vocab.size, cfg.text.width)}
    if opts.box_weight:
        theta["box"] = box_head(jax.random.PRNGKey(opts.seed + 2), cfg.text.width)
    if opts.glyph_weight:
        theta["glyph"] = glyph_head(jax.random.PRNGKey(opts.seed + 3), cfg.text.width, glyphs.classes)
    optimizer = tower_optimizer(opts.lr, opts.steps, opts.warmup)
    opt_state = optimizer.init(theta)
    step = _step_fn(cfg, optimizer, opts)
    mesh = make_mesh(fsdp=1)  # data parallel: each device takes its rows of a batch, XLA all-reduces the gradients
    rows = NamedSharding(mesh, PartitionSpec(DATA)) if opts.batch % mesh.size == 0 else replicated(mesh)
    theta, opt_state = jax.device_put((theta, opt_state), replicated(mesh))

    decoded = DecodedImages(cfg.resolution, cfg.resize_filter)

    def load(i: int) -> dict:
        if i == 1:  # on the loader thread while the first step compiles: the images the run reads, in order
            parts = stream_windows(opts.seed, len(words.images), 0, opts.steps * opts.batch, AHEAD_WINDOW * opts.batch)
            decoded.warm((words.images[j] for part in parts for j in part), workers=WARM_WORKERS)
        pick = stream_indices(opts.seed, len(words.images), (i - 1) * opts.batch, opts.batch)
        pixels = decoded.batch([words.images[j] for j in pick])
        batch = {"pixels": pixels, "positives": words.positives[pick], "cells": words.region_cells[pick],
                 "region_words": words.region_words[pick].astype(np.float32), "bins": words.region_bins[pick]}
        if opts.glyph_weight:  # the term's labels travel only when the term is on
            batch |= {"labels": glyphs.labels[pick], "paddings": glyphs.paddings[pick],
                      "has_text": glyphs.has_text[pick]}
        return jax.device_put(batch, rows)

    records, compile_s = [], 0.0
    batches = prefetched(load, 1)
    with MetricsLog(out) as metrics, \
            ProgressBar(opts.steps, 0, enabled=progress, label="pretrain-vision") as bar, closing(batches):
        clock = time.perf_counter()
        for i in range(1, opts.steps + 1):
            theta, opt_state, loss, (bag, region, boxes, glyph) = step(theta, opt_state, next(batches))
            if i == 1:
                compile_s = time.perf_counter() - clock
            if i == 1 or i % opts.log_every == 0 or i == opts.steps:
                record = {"step": i, "loss": float(loss), "bag_loss": float(bag), "region_loss": float(region),
                          "box_loss": float(boxes), "glyph_loss": float(glyph),
                          "examples_seen": i * opts.batch,
                          "steps_per_s": i / (time.perf_counter() - clock)}
                metrics.write(record)
                records.append(record)
                bar.update(i, record)
    return theta, records, compile_s
