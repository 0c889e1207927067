"""Can the image tower read a text image by itself? `pretrain-vision` at several learning rates and glyph weights.

    .venv/bin/python benchmarks/tower_glyph_probe.py [--runs 1e-3:0.3,1e-3:1,2e-3:1,3e-3:1,5e-3:1] [--work DIR]

Why: the decoder can only copy out characters that the tokens of a text image
already say. The glyph term trains each token to say which character it shows
(CTC over the tokens in raster order, `pg2edge/train/glyph_ctc.py`), through a
map the tower stage keeps beside its model; best-path decoding of that map's
frames is the tower's own reading, with no decoder involved. For each
`LR:GLYPH_WEIGHT`, the shipped model's `pg2edge pretrain-vision` command (only
`--lr` and `--glyph-weight` changed) trains the tower on the shipped model's
suite; its reading of every `ocr` test image is scored by character error
rate, on the whole text and on the digits of its numbers, next to the stage's
last losses (the mean of its last three logged steps: the region and box terms
are what detection and the object lookups need). Writes
benchmarks/results/tower_glyph_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax
import numpy as np

from pg2edge.checkpoint.loader import load_checkpoint
from pg2edge.eval.ocr import cer
from pg2edge.model import siglip
from pg2edge.param_layout import unflatten
from pg2edge.preprocess import preprocess_batch
from pg2edge.tasks import read_examples
from pg2edge.train.glyph_ctc import glyph_frames, greedy_read, read_head
from tower_probe import CFG, RESULTS, ensure_suite, pretrain, run_meta, run_sentence

LOSSES = ("bag_loss", "region_loss", "box_loss", "glyph_loss")


def tower_reading(run: Path, images: list[Path]) -> list[str]:
    """What the tower of a `pretrain-vision` output reads in each image, through the glyph map it kept."""
    _, flat = load_checkpoint(run / "params.npz", CFG)
    img = unflatten(flat)["img"]
    head, charset = read_head(run)
    frames = jax.jit(lambda px: glyph_frames(siglip.encode(img, CFG.vision, px), head))
    read = []
    for start in range(0, len(images), 64):
        read += greedy_read(np.asarray(frames(preprocess_batch(images[start:start + 64], CFG.resolution))), charset)
    return read


def is_number(text: str) -> bool:
    """Every word of an OCR text is digits (the texts whose CER `digits_cer` reports)."""
    return all(word.isdigit() for word in text.split())


def digits_cer(predictions: list[str], references: list[str]) -> float:
    """CER over the references that are all numbers, against what was read for them."""
    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if is_number(r)]
    return cer([p for p, _ in pairs], [r for _, r in pairs])


def last_losses(run: Path, steps: int = 3) -> dict[str, float]:
    """Each term's mean over the last `steps` logged steps of the run's metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-steps:]
    return {name: float(np.mean([r[name] for r in records])) for name in LOSSES}


def write_results(rows: list[dict], meta: dict) -> None:
    """tower_glyph_probe.json and .md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tower_glyph_probe.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Tower glyph probe: what does the image tower read by itself?", "",
             f"{run_sentence(meta)}, only `--lr` and `--glyph-weight` changed. CER of the tower's own best-path "
             "CTC reading of the "
             f"{meta['ocr_images']} `ocr` test images ({meta['number_images']} of them numbers only); losses: the "
             "mean of the last three logged steps.", "",
             "| lr | glyph weight | tower CER | CER on numbers | bag | region | box | glyph | pretrain s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['lr']:g} | {r['glyph_weight']:g} | {r['cer']:.3f} | {r['digits_cer']:.3f} | "
              f"{r['bag_loss']:.3f} | {r['region_loss']:.3f} | {r['box_loss']:.3f} | {r['glyph_loss']:.3f} | "
              f"{r['seconds']:.0f} |" for r in rows]
    (RESULTS / "tower_glyph_probe.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    """Suite (reused if current), one tower per run, its reading of the test texts, results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1e-3:0.3,1e-3:1,2e-3:1,3e-3:1,5e-3:1",
                    help="comma list of LR:GLYPH_WEIGHT (the glyph weight must be > 0: the map is what reads)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pg2edge-tower-probe")
    args = ap.parse_args()
    runs = [tuple(spec.split(":")) for spec in args.runs.split(",")]
    try:
        valid = all(len(run) == 2 and float(run[0]) > 0 and float(run[1]) > 0 for run in runs)
    except ValueError:
        valid = False
    if not valid:
        ap.error(f"--runs: expected LR:GLYPH_WEIGHT items, both numbers > 0, found {args.runs!r}")
    suite = ensure_suite(args.work)
    texts = [ex for ex in read_examples(suite / "test.jsonl").examples if ex.task == "ocr"]
    references = [ex.suffix for ex in texts]
    rows = []
    for lr, weight in runs:
        run = args.work / f"tower-lr-{lr}-glyph-{weight}"
        seconds = pretrain(suite, run, {"--lr": lr, "--glyph-weight": weight})
        read = tower_reading(run, [ex.image for ex in texts])
        rows.append({"lr": float(lr), "glyph_weight": float(weight), "seconds": round(seconds, 1),
                     "cer": cer(read, references), "digits_cer": digits_cer(read, references), **last_losses(run)})
        print(rows[-1], flush=True)
    meta = {**run_meta(), "ocr_images": len(texts),
            "number_images": sum(map(is_number, references))}
    write_results(rows, meta)


if __name__ == "__main__":
    main()
