"""`pg2edge demo` until the trained tiny model lands: the JAX model end to end on random weights.

Builds the project's tokenizer, preprocesses a generated image, and greedily
decodes with `pg2edge.model.generate`, printing tokens and timings.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image, ImageDraw

from pg2edge.config import get_config
from pg2edge.preprocess import preprocess
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer


def _demo_image(size: int = 256) -> Image.Image:
    """A red circle and a blue square on grey: no image files needed."""
    img = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 30, 120, 130), fill=(220, 30, 30))
    draw.rectangle((140, 120, 230, 210), fill=(30, 60, 220))
    return img


def run_random_init_demo(size: str, res: int | None, prompt: str, max_new_tokens: int) -> None:
    """Print what a random-init variant generates for `prompt` and how long it took."""
    import jax

    from pg2edge.model import generate, init_params

    cfg = get_config(size, res)
    tok = Tokenizer.from_bytes(build_synthetic_tokenizer(cfg.text.vocab_size), name="synthetic")
    params = init_params(cfg, jax.random.PRNGKey(0))
    pixels = preprocess(_demo_image(), cfg.resolution, cfg.resize_filter)[None]
    ids = tok.encode_prompt(prompt).tokens.tolist()
    t0 = time.perf_counter()
    gen = generate(params, cfg, pixels, [ids], max_new_tokens=max_new_tokens,
                   max_len=cfg.num_image_tokens + len(ids) + max_new_tokens + 1)
    dt = time.perf_counter() - t0
    print(f"variant {cfg.name} (random-init, {cfg.num_image_tokens} image tokens)")
    print(f"prompt  {prompt!r} -> ids {ids}")
    print(f"output  ids {gen.tokens[0]} ({gen.stop_reasons[0]})")
    print(f"text    {tok.decode(gen.tokens[0])!r}")
    print(f"time    {dt:.2f} s (incl. jit); logits finite: {bool(np.isfinite(gen.logits).all())}")
