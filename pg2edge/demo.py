"""`pg2edge demo` until the trained tiny model lands: the whole chain on random-init weights.

Converts the tiny variant to ONNX bundles (f32 and int4) under `demo_out/`,
runs them with the on-device runtime on a generated image, and prints the
tokens next to the JAX model's, so a fresh install shows every stage working.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pg2edge.config import get_config


def _demo_image(size: int = 256) -> Image.Image:
    """A red circle and a blue square on grey: no image files needed."""
    img = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 30, 120, 130), fill=(220, 30, 30))
    draw.rectangle((140, 120, 230, 210), fill=(30, 60, 220))
    return img


def run_random_init_demo(size: str, res: int | None, prompt: str, max_new_tokens: int,
                         out: Path = Path("demo_out")) -> None:
    """Convert, run on ONNX Runtime, and compare with the JAX reference; print a small table."""
    from pg2edge.checkpoint import random_params
    from pg2edge.export.convert import ConvertOptions, convert
    from pg2edge.model import generate
    from pg2edge.param_layout import unflatten
    from pg2edge.runtime.engine import Engine

    cfg = get_config(size, res)
    image = _demo_image()
    out.mkdir(exist_ok=True)
    rows = []
    reference = None
    for quant in ("f32", "int4"):
        t0 = time.perf_counter()
        bundle = out / f"{cfg.name}-{quant}"
        convert(ConvertOptions(size=size, res=res, out=bundle, random_init=True, quant=quant, force=True,
                               max_len=cfg.num_image_tokens + 64, prefill=(32,)))
        convert_s = time.perf_counter() - t0
        engine = Engine(bundle)
        result = engine.generate(image, prompt, max_new_tokens=max_new_tokens)
        if reference is None:
            pixels, _ = engine.pixels(image)
            reference = generate(unflatten(random_params(cfg, seed=0)), cfg, pixels, [engine.prompt_ids(prompt)],
                                 max_new_tokens=max_new_tokens, max_len=engine.max_len).tokens[0]
        rows.append((quant, convert_s, result, result.tokens == reference))
    print(f"variant {cfg.name} (random-init weights: outputs are noise; the trained model comes with issue [4/5])")
    print(f"prompt  {prompt!r}; JAX reference ids {reference}")
    print(f"{'bundle':<16}{'convert s':>10}{'decode tok/s':>14}  same tokens as JAX  ids")
    for quant, convert_s, result, same in rows:
        print(f"{cfg.name + '-' + quant:<16}{convert_s:>10.1f}{result.timings.decode_tok_s:>14.1f}  "
              f"{str(same):<18}  {result.tokens}")
    print(f"bundles in {out}/ (run one with: pg2edge run {out}/{cfg.name}-int4 --image IMG --prompt '{prompt}')")
    if not np.all([same for quant, _, _, same in rows if quant == "f32"]):
        raise SystemExit("the f32 bundle disagrees with the JAX model")
