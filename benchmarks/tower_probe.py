"""Does each image token say which object it shows? `pretrain-vision` with and without its region term.

    .venv/bin/python benchmarks/tower_probe.py [--weights 0,1] [--work DIR]

Why: the decoder answers "what color is the star" only if the token of the star
says "star". `vision_probe.py` scores a tower on one-shape images, where the
image-level word bag is enough; here every object of the multi-object test
images counts. For each `--region-weight`, `pg2edge pretrain-vision` trains the
mini tower on the shipped model's suite (the same command the shipped model
uses, only that weight changed), then a linear probe (ridge regression onto
one-hot labels, fitted on the objects of 3000 train images, scored on those of
800 test images) reads each object's shape and colour from the projected
token under its box centre. Objects come from the suite's `detect` lines
(label "<colour> <shape>"). Writes benchmarks/results/tower_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

from pg2edge.checkpoint.loader import load_checkpoint
from pg2edge.config import get_config
from pg2edge.model import siglip
from pg2edge.param_layout import unflatten
from pg2edge.postprocess import parse_objects
from pg2edge.preprocess import preprocess_batch
from pg2edge.tasks import SuiteConfig, is_current, read_examples, write_suite
from pg2edge.tasks.vocab import COLORS, SHAPES
from pg2edge.train.vision_pretrain import centre_cell
from train_shipped_model import SUITE as SHIPPED_SUITE
from train_shipped_model import TOWER_RUN, pg2edge

RESULTS = Path(__file__).parent / "results"
SUITE = SuiteConfig(**SHIPPED_SUITE)
CFG = get_config("mini", SUITE.res)
PROBE_IMAGES = {"train": 3000, "test": 800}
RIDGE = 1e-2


def objects(split_jsonl: Path, limit: int) -> dict[Path, list[tuple[int, str, str]]]:
    """(centre cell, colour, shape) of every object of the first `limit` images with a detect line."""
    found: dict[Path, set[tuple[int, str, str]]] = {}
    for ex in read_examples(split_jsonl).examples:
        if ex.task != "detect" or (ex.image not in found and len(found) == limit):
            continue
        for obj in parse_objects(ex.suffix, (CFG.resolution, CFG.resolution)):
            words = obj.label.split()
            if len(words) == 2 and words[0] in COLORS and words[1] in SHAPES:
                found.setdefault(ex.image, set()).add((centre_cell(obj.box, CFG), words[0], words[1]))
    return {image: sorted(objs) for image, objs in found.items()}


def centre_tokens(run: Path, objs: dict[Path, list[tuple[int, str, str]]]) -> tuple[np.ndarray, list, list]:
    """The projected image token under each object's centre, and its colour and shape labels."""
    _, flat = load_checkpoint(run / "params.npz", CFG)
    img = unflatten(flat)["img"]
    encode = jax.jit(lambda px: siglip.encode(img, CFG.vision, px))
    images = list(objs)
    feats, colours, shapes = [], [], []
    for start in range(0, len(images), 64):
        chunk = images[start:start + 64]
        tokens = np.asarray(encode(preprocess_batch(chunk, CFG.resolution)))
        for row, image in enumerate(chunk):
            for cell, colour, shape in objs[image]:
                feats.append(tokens[row, cell])
                colours.append(colour)
                shapes.append(shape)
    return np.stack(feats), colours, shapes


def probe_accuracy(x_train: np.ndarray, y_train: list, x_test: np.ndarray, y_test: list, classes: tuple) -> float:
    """Test accuracy of a ridge-regression probe onto one-hot labels (argmax over `classes`)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a, b = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
    onehot = np.eye(len(classes))[[classes.index(y) for y in y_train]]
    w = np.linalg.solve(a.T @ a + RIDGE * len(a) * np.eye(a.shape[1]), a.T @ onehot)
    return float(np.mean(np.argmax(b @ w, 1) == np.array([classes.index(y) for y in y_test])))


def pretrain(suite: Path, out: Path, changed: dict[str, str]) -> float:
    """Run the shipped model's `pg2edge pretrain-vision` command with only the `changed` options changed; seconds."""
    shutil.rmtree(out, ignore_errors=True)
    args = list(TOWER_RUN)
    for option, value in changed.items():
        args[args.index(option) + 1] = value
    return pg2edge("pretrain-vision", *args, "--data", str(suite / "train.jsonl"), "--out", str(out))[1]


def ensure_suite(work: Path) -> Path:
    """`work`/suite: the shipped model's suite, regenerated unless it is already there and current."""
    suite = work / "suite"
    if not is_current(suite, SUITE):
        write_suite(suite, SUITE, force=True)
    return suite


def run_meta() -> dict:
    """The suite and the shipped tower command's steps and batch, which every probe's rows share."""
    return {"suite": {"n": SUITE.n, "seed": SUITE.seed, "res": SUITE.res, "layout": SUITE.layout},
            "steps": int(TOWER_RUN[TOWER_RUN.index("--steps") + 1]),
            "batch": int(TOWER_RUN[TOWER_RUN.index("--batch") + 1])}


def run_sentence(meta: dict) -> str:
    """The markdown sentence naming the tower command and suite that a probe's rows come from."""
    return (f"`pg2edge pretrain-vision --size mini`, {meta['steps']} steps of {meta['batch']} images on the "
            f"shipped model's suite (seed {SUITE.seed}, {SUITE.n} examples, {SUITE.res} px, {SUITE.layout} layout)")


def write_results(rows: list[dict], meta: dict) -> None:
    """tower_probe.json and .md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tower_probe.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Tower probe: does the token under each object say what it is?", "",
             f"{run_sentence(meta)}. Linear probe (ridge) on the projected token under each object's box centre: "
             f"{meta['train_objects']} objects of {PROBE_IMAGES['train']} train images fit it, "
             f"{meta['test_objects']} objects of {PROBE_IMAGES['test']} test images score it. "
             f"Chance: shape {1 / len(SHAPES):.2f}, colour {1 / len(COLORS):.3f}.", "",
             "| region weight | shape | colour | pretrain s |", "|---|---|---|---|"]
    lines += [f"| {r['region_weight']:g} | {r['shape']:.3f} | {r['colour']:.3f} | {r['seconds']:.0f} |" for r in rows]
    (RESULTS / "tower_probe.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    """Suite (reused if current), one tower per region weight, probes, results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="0,1", help="comma list of --region-weight values")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pg2edge-tower-probe")
    args = ap.parse_args()
    suite = ensure_suite(args.work)
    objs = {split: objects(suite / f"{split}.jsonl", limit) for split, limit in PROBE_IMAGES.items()}
    rows = []
    for weight in (float(w) for w in args.weights.split(",")):
        run = args.work / f"tower-region-{weight:g}"
        seconds = pretrain(suite, run, {"--region-weight": f"{weight:g}"})
        (x_tr, c_tr, s_tr), (x_te, c_te, s_te) = (centre_tokens(run, objs[s]) for s in ("train", "test"))
        rows.append({"region_weight": weight, "seconds": round(seconds, 1),
                     "shape": probe_accuracy(x_tr, s_tr, x_te, s_te, SHAPES),
                     "colour": probe_accuracy(x_tr, c_tr, x_te, c_te, tuple(COLORS))})
        print(rows[-1], flush=True)
    meta = {**run_meta(), "ridge": RIDGE, "train_objects": sum(map(len, objs["train"].values())),
            "test_objects": sum(map(len, objs["test"].values()))}
    write_results(rows, meta)


if __name__ == "__main__":
    main()
