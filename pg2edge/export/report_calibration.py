"""`convert --report`'s calibration batch: suite images and prompts through the vision and prefill parts.

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
from pg2edge.quantize.calibration import output_errors
from pg2edge.quantize.recipes import Recipe
from pg2edge.tokenizer import Tokenizer

MAX_FLOAT_BYTES = 4 << 30  # above this (3B and up), the calibration pass is skipped
CALIBRATION_SEED = 1234  # not the suite's training seed 0: calibration images are not training images


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
