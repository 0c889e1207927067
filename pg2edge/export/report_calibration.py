"""Calibration data for `convert`: `--report`'s batch through the vision and prefill parts, `--gptq`'s Hessians.

The output error of each quantized weight is measured on what the bundle
will really run: the exported `vision` part feeding the smallest `prefill`
bucket, on a few deterministic synthetic-suite images with their prompts.
It needs the float weights in memory (one forward pass), so it is skipped
with a note above `MAX_FLOAT_BYTES`; the weight errors are always reported.
"""

from __future__ import annotations

import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.export.split import SplitConfig, prefill_part, vision_part
from pg2edge.preprocess import preprocess
from pg2edge.quantize.calibration import input_hessians, output_errors
from pg2edge.quantize.gptq import Hessians
from pg2edge.quantize.matmul_view import is_matmul_weight
from pg2edge.quantize.recipes import Recipe
from pg2edge.tokenizer import Tokenizer

MAX_FLOAT_BYTES = 4 << 30  # above this (3B and up), the calibration pass is skipped
CALIBRATION_SEED = 1234  # not the suite's training seed 0: calibration images are not training images
GPTQ_IMAGES = 256  # calibration examples the benchmarks give `convert --gptq` (129 s on the mini model)
TIED_TABLE = "llm/embedder/input_embedding"  # its codes are also the embedding rows: kept round-to-nearest


def calibration_batches(cfg: ModelConfig, split: SplitConfig, tok: Tokenizer, n: int = 4) -> list[tuple]:
    """`n` (pixels, tokens, valid_len) batches of one suite image and one of its prompts each."""
    from PIL import Image

    from pg2edge.tasks.generate import generate_image

    bucket = min(split.prefill_lens)
    batches = []
    for i in range(n):
        image = generate_image(CALIBRATION_SEED, i, cfg.resolution)
        prompt = image.targets[i % len(image.targets)].prefix
        ids = tok.encode_prompt(prompt).tokens[:bucket]
        tokens = np.zeros((1, bucket), np.int32)
        tokens[0, :len(ids)] = ids
        pixels = preprocess(Image.fromarray(image.pixels), cfg.resolution, cfg.resize_filter)[None]
        batches.append((pixels, tokens, np.array([cfg.num_image_tokens + len(ids)], np.int32)))
    return batches


def calibration_output_errors(cfg: ModelConfig, split: SplitConfig, tok: Tokenizer, params: dict,
                              recipe: Recipe) -> dict[str, float]:
    """{param: relative output error} of vision + the smallest prefill bucket on the calibration batch."""
    vision = vision_part(cfg, split)
    prefill = prefill_part(cfg, split, min(split.prefill_lens))

    def fn(p, pixels, tokens, valid_len):
        (embeds,) = vision.fn(p, pixels)
        return prefill.fn(p, embeds, tokens, valid_len)

    return output_errors(fn, params, recipe, calibration_batches(cfg, split, tok))


def gptq_examples(cfg: ModelConfig, tok: Tokenizer, n: int) -> list[tuple]:
    """`n` unpadded (pixels, tokens, mask_ar, input_mask) examples: suite images with a prompt and its answer,
    cycling through each image's tasks, so the decoder sees the prefixes and the answers it will write."""
    from PIL import Image

    from pg2edge.tasks.generate import generate_image

    out = []
    for i in range(n):
        image = generate_image(CALIBRATION_SEED, i, cfg.resolution)
        target = image.targets[i % len(image.targets)]
        prompt = tok.encode_prompt(target.prefix, target.suffix)
        pixels = preprocess(Image.fromarray(image.pixels), cfg.resolution, cfg.resize_filter)[None]
        out.append((pixels, prompt.tokens[None], prompt.mask_ar[None], np.ones((1, len(prompt)), np.int32)))
    return out


def gptq_hessians(cfg: ModelConfig, tok: Tokenizer, params: dict, n: int) -> Hessians:
    """The calibration Hessians of every matmul weight but the tied table, on `n` suite examples (any recipe
    then takes GPTQ codes for the weights it quantizes)."""
    from pg2edge.model import paligemma

    def fn(p, pixels, tokens, mask_ar, input_mask):
        return paligemma.forward(p, cfg, pixels, tokens, mask_ar, input_mask)

    return input_hessians(fn, params, gptq_examples(cfg, tok, n),
                          include=lambda name: name != TIED_TABLE and is_matmul_weight(name))
