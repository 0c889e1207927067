"""Can the tiny model's image tower learn what the suite shows? It, and a small CNN, on the same data and loss.

    .venv/bin/python benchmarks/vision_probe.py [--steps 800] [--batch 64] [--work DIR]
        [--encoders vit,cnn] [--layouts grid,free] [--vit-width 96] [--vit-depth 3] [--vit-patch 14]

Why: the trained tiny model answers colour questions but not shape ones, and never
localizes. This isolates the image tower from the decoder. Each encoder is trained
from scratch, alone, with one sigmoid loss per word of the suite's caption
vocabulary (6 shapes, 8 colours, 2 sizes): SigLIP's loss with the text tower
reduced to one learned vector per word. Targets are the words of each shape
image's caption, so an image with several shapes holds several positives.

- `vit`: pg2edge's own `siglip.encode` (patch embedding, encoder, projector) on
  `train.init.from_scratch_params`, the init of `finetune --random-init`, scored
  by `pretrain-vision`'s head (`train.vision_pretrain.word_logits`): a soft maximum
  over the image tokens of token . word vector, since an object covers only a
  few of the 64 patches.
- `cnn`: a reference with a convolution's inductive bias: four 3x3 convolutions
  (three of stride 2), ReLU, a max-pool over positions and one dense layer.

Both see the same batches, optimizer (Adam, 5 % warmup then cosine, peak 1e-3)
and steps, on each suite layout: `grid` (shapes centred on 14 px cells, the
default suite) and `free` (shapes anywhere, so at sub-patch shifts). Scored
by per-attribute accuracy (argmax among that attribute's words) on the
one-shape images of the test split. Writes
benchmarks/results/vision_probe.{json,md,png}; a tower other than mini's
(`--vit-width/--vit-depth/--vit-patch`) writes vision_probe_w<W>_d<D>_p<P>.*.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pg2edge.config import ModelConfig, get_config
from pg2edge.preprocess import preprocess_batch
from pg2edge.tasks import SuiteConfig, is_current, write_suite
from pg2edge.tasks.jsonl import read_examples
from pg2edge.tasks.layout import LAYOUTS
from pg2edge.tasks.vocab import COLORS, SHAPES, SIZES
from pg2edge.train.init import from_scratch_params
from pg2edge.train.vision_pretrain import tower_optimizer, word_head, word_logits

RESULTS = Path(__file__).resolve().parent / "results"
SUITE = SuiteConfig(n=16000, seed=0, res=112)  # the layout is chosen per run (--layouts)
WORDS = (*SHAPES, *COLORS, *SIZES)
ATTRIBUTES = {"shape": SHAPES, "color": tuple(COLORS), "size": SIZES}
CNN_CHANNELS = ((3, 32, 2), (32, 64, 2), (64, 96, 2), (96, 96, 1))  # (in, out, stride) of each 3x3 conv


def caption_data(suite: Path, split: str, one_shape_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [N, R, R, 3] of the split's shape images (the model's preprocessing) and their caption
    words as multi-hot [N, 16]."""
    examples = [e for e in read_examples(suite / f"{split}.jsonl").examples
                if e.task == "caption" and not (one_shape_only and " and " in e.suffix)]
    pixels = preprocess_batch([e.image for e in examples], SUITE.res)
    words = np.array([[w in e.suffix.split() for w in WORDS] for e in examples], np.float32)
    return pixels, words


def tower_config(width: int, depth: int, patch: int) -> ModelConfig:
    """The mini variant with its image tower resized (the defaults give mini itself)."""
    cfg = get_config("mini", SUITE.res)
    vision = dataclasses.replace(cfg.vision, width=width, depth=depth, mlp_dim=4 * width, patch_size=patch)
    return dataclasses.replace(cfg, vision=vision)


def vit_init(cfg: ModelConfig, key: jax.Array) -> dict:
    """The image tower as `finetune --random-init` draws it, plus one vector per word."""
    return {"img": from_scratch_params(cfg, key)["img"], **word_head(jax.random.fold_in(key, 1), len(WORDS),
                                                                     cfg.text.width)}


def cnn_init(key: jax.Array) -> dict:
    """He-initialized 3x3 convolutions and the word layer."""
    keys = jax.random.split(key, len(CNN_CHANNELS) + 1)
    convs = [{"w": jax.random.normal(k, (3, 3, cin, cout)) * math.sqrt(2.0 / (9 * cin)), "b": jnp.zeros(cout)}
             for k, (cin, cout, _) in zip(keys, CNN_CHANNELS)]
    last = CNN_CHANNELS[-1][1]
    return {"convs": convs, "words": jax.random.normal(keys[-1], (last, len(WORDS))) / math.sqrt(last),
            "bias": jnp.zeros(len(WORDS))}


def cnn_logits(theta: dict, pixels: jax.Array) -> jax.Array:
    """Word scores [B, 16] from max-pooled convolution features."""
    x = pixels
    for layer, (_, _, stride) in zip(theta["convs"], CNN_CHANNELS):
        x = jax.lax.conv_general_dilated(x, layer["w"], (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + layer["b"])
    return jnp.max(x, axis=(1, 2)) @ theta["words"] + theta["bias"]


def accuracy(logits: np.ndarray, words: np.ndarray) -> dict[str, float]:
    """Per attribute: how often the best-scoring word of that attribute is the caption's."""
    out = {}
    for name, group in ATTRIBUTES.items():
        idx = [WORDS.index(w) for w in group]
        out[name] = round(float((logits[:, idx].argmax(1) == words[:, idx].argmax(1)).mean()), 4)
    return out


def train(name: str, layout: str, init, logits_fn, data: tuple, test: tuple, steps: int, batch: int,
          evals: int) -> list[dict]:
    """Train one encoder; a row of test accuracies every steps // evals steps."""
    optimizer = tower_optimizer(1e-3, steps, 0.05)  # pretrain-vision's
    theta = init(jax.random.PRNGKey(0))
    state = optimizer.init(theta)
    @jax.jit
    def step(theta, state, images, words):
        loss, grads = jax.value_and_grad(
            lambda t: optax.sigmoid_binary_cross_entropy(logits_fn(t, images), words).mean())(theta)
        updates, state = optimizer.update(grads, state, theta)
        return optax.apply_updates(theta, updates), state, loss

    predict = jax.jit(logits_fn)
    order = np.random.default_rng(0)  # the same batches for every encoder
    rows, seconds = [], 0.0
    for i in range(1, steps + 1):
        pick = order.integers(0, len(data[0]), batch)
        start = time.perf_counter()
        theta, state, loss = step(theta, state, jnp.asarray(data[0][pick]), jnp.asarray(data[1][pick]))
        loss = float(loss)
        seconds += time.perf_counter() - start
        if i % max(steps // evals, 1) == 0 or i == steps:
            logits = np.concatenate([np.asarray(predict(theta, jnp.asarray(test[0][j:j + 256])))
                                     for j in range(0, len(test[0]), 256)])
            rows.append({"encoder": name, "layout": layout, "step": i, "examples": i * batch, "train_seconds": round(seconds, 1),
                         "loss": round(loss, 4), **accuracy(logits, test[1])})
            print(rows[-1], flush=True)
    return rows


def write_results(rows: list[dict], meta: dict, stem: str) -> None:
    """JSON, a markdown table and a learning-curve plot under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Image tower probe: can it learn the suite's shapes?", "",
             f"Trained from scratch on the caption words of each layout's {meta['train_images']} shape images "
             f"(suite seed {SUITE.seed}, {SUITE.n} images, {SUITE.res} px), batch {meta['batch']}; "
             f"accuracy on its {meta['test_images']} one-shape test images. Chance: shape 0.17, colour 0.125, "
             "size 0.5. Layout `grid`: shapes centred on 14 px cells (the suite's default); `free`: anywhere. "
             "Train seconds include compiling the step.",
             "", f"ViT: width {meta['vit']['width']}, depth {meta['vit']['depth']}, "
             f"patch {meta['vit']['patch_size']}; CNN: 3x3 convolutions {meta['cnn_channels']} (in, out, stride).",
             "", "| layout | encoder | step | examples | train s | shape | colour | size |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['layout']} | {r['encoder']} | {r['step']} | {r['examples']} | {r['train_seconds']} | "
              f"{r['shape']:.3f} | {r['color']:.3f} | {r['size']:.3f} |" for r in rows]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for encoder, style in (("vit", "-"), ("cnn", "--")):
        for layout, color in (("grid", "C0"), ("free", "C3")):
            pts = [(r["examples"], r["shape"]) for r in rows if (r["encoder"], r["layout"]) == (encoder, layout)]
            if pts:
                ax.plot(*zip(*pts), style, color=color, marker="o", label=f"{encoder}, {layout} layout")
    ax.axhline(1 / len(SHAPES), color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("training examples")
    ax.set_ylabel("shape accuracy (one-shape test images)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=120)


def main() -> None:
    """Suite (reused if present), both encoders, results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--evals", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pg2edge-vision-probe")
    ap.add_argument("--encoders", default="vit,cnn", help="comma list of vit, cnn")
    ap.add_argument("--layouts", default="grid,free", help="comma list of suite layouts: grid, free")
    ap.add_argument("--vit-width", type=int, default=96)
    ap.add_argument("--vit-depth", type=int, default=3)
    ap.add_argument("--vit-patch", type=int, default=14)
    args = ap.parse_args()
    cfg = tower_config(args.vit_width, args.vit_depth, args.vit_patch)
    mini = cfg == get_config("mini", SUITE.res)
    stem = "vision_probe" if mini else f"vision_probe_w{args.vit_width}_d{args.vit_depth}_p{args.vit_patch}"
    encoders = {"vit": (functools.partial(vit_init, cfg), functools.partial(word_logits, cfg)),
                "cnn": (cnn_init, cnn_logits)}
    chosen = args.encoders.split(",")
    if unknown := set(chosen) - set(encoders):
        ap.error(f"--encoders: unknown {', '.join(sorted(unknown))}; expected vit, cnn")
    layouts = args.layouts.split(",")
    if unknown := set(layouts) - set(LAYOUTS):
        ap.error(f"--layouts: unknown {', '.join(sorted(unknown))}; expected {', '.join(LAYOUTS)}")
    rows = []
    for layout in layouts:
        suite, config = args.work / f"suite-{layout}", dataclasses.replace(SUITE, layout=layout)
        if not is_current(suite, config):
            write_suite(suite, config, force=True)
        data = caption_data(suite, "train", one_shape_only=False)
        test = caption_data(suite, "test", one_shape_only=True)
        for name in chosen:
            rows += train(name, layout, *encoders[name], data, test, args.steps, args.batch, args.evals)
    meta = {"suite": dataclasses.asdict(SUITE), "layouts": layouts, "steps": args.steps, "batch": args.batch,
            "train_images": len(data[0]), "test_images": len(test[0]),
            "vit": dataclasses.asdict(cfg.vision), "cnn_channels": CNN_CHANNELS}
    write_results(rows, meta, stem)


if __name__ == "__main__":
    main()
