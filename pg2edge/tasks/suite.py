"""Write the whole suite: PNGs, train/val/test JSONL and meta.json, byte-identical for the same seed.

The directory is staged next to `--out` and renamed into place at the end (the
bundle writer's `staging_dir`), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL

from pg2edge.export.bundle import staging_dir
from pg2edge.postprocess import LOC_DENOMINATOR
from pg2edge.tasks.errors import DataError
from pg2edge.tasks.generate import PNG_COMPRESS_LEVEL, TEXT_FRACTION, generate_image
from pg2edge.tasks.layout import LAYOUTS
from pg2edge.tasks.targets import Target
from pg2edge.tasks.vocab import SUITE_WORDS

# Bump whenever the same seed would give different files (2: train_simple.jsonl; 3: the layout grid;
# 4: counting prompts name the shape as every other prompt does, "how many circle are there").
GENERATOR_VERSION = 4
SPLITS = ("train", "val", "test")
# train.jsonl's lines whose image is `simple` (one shape, one text line): a from-scratch model's first
# curriculum stage, where no answer needs binding a word to one object among several.
SIMPLE_TRAIN = "train_simple"
HELD_OUT_FRACTION = 0.1  # each of val and test; train gets the rest
IMAGE_DIR = "images"
META = "meta.json"
TOKENIZER_VOCAB = 2048
MIN_RES, MAX_RES = 56, 1024


@dataclass(frozen=True)
class SuiteConfig:
    """How many images, from which seed, at which resolution, with which layout."""

    n: int
    seed: int = 0
    res: int = 224
    layout: str = "grid"

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise DataError(f"n: expected a positive number of images, found {self.n!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"seed: expected an integer >= 0, found {self.seed!r}")
        if not isinstance(self.res, int) or not MIN_RES <= self.res <= MAX_RES:
            raise DataError(f"res: expected an integer in [{MIN_RES}, {MAX_RES}], found {self.res!r}")
        if self.layout not in LAYOUTS:
            raise DataError(f"layout: expected one of {', '.join(LAYOUTS)}, found {self.layout!r}")


@dataclass(frozen=True)
class SuiteSummary:
    """What was written: per-split image and example counts, per-task example counts."""

    out: Path
    images: dict[str, int]
    examples: dict[str, int]
    tasks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    simple_train: int = 0  # lines in train_simple.jsonl


def assign_splits(n: int, seed: int) -> tuple[str, ...]:
    """Split name of each image: a seeded permutation, 10% val, 10% test (rounded half up), rest train."""
    held = int(n * HELD_OUT_FRACTION + 0.5)
    order = np.random.default_rng([seed, n, 0x5B17]).permutation(n)
    names = np.empty(n, dtype=object)
    names[order[:held]] = "val"
    names[order[held:2 * held]] = "test"
    names[order[2 * held:]] = "train"
    return tuple(str(v) for v in names)


def image_name(index: int) -> str:
    """Path of image `index` relative to the suite directory (where the JSONL files live)."""
    return f"{IMAGE_DIR}/{index:06d}.png"


def example_line(image: str, target: Target) -> str:
    """One JSONL line; `task` is extra to the training contract (image, prefix, suffix) for per-task metrics."""
    row = {"image": image, "prefix": target.prefix, "suffix": target.suffix, "task": target.task}
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _meta(cfg: SuiteConfig, images: Counter, examples: Counter, tasks: Counter) -> dict:
    """meta.json: everything that determines the files, and what they hold; no timestamps."""
    return {
        "generator": "pg2edge.tasks", "generator_version": GENERATOR_VERSION, "pillow_version": PIL.__version__,
        "seed": cfg.seed, "res": cfg.res, "layout": cfg.layout, "n_images": cfg.n,
        "images": {s: images[s] for s in SPLITS}, "examples": {s: examples[s] for s in SPLITS},
        "simple_train_examples": examples[SIMPLE_TRAIN],
        "tasks": dict(sorted(tasks.items())), "text_fraction": TEXT_FRACTION,
        "png_compress_level": PNG_COMPRESS_LEVEL, "loc_denominator": LOC_DENOMINATOR,
        "box_order": "y0 x0 y1 x1", "seg_encoder": "stand-in: code = 16 * round(7 * coverage) + cell, 4x4 cells",
        "tokenizer": {"vocab_size": TOKENIZER_VOCAB, "extra_words": list(SUITE_WORDS)},
    }


def split_indices(cfg: SuiteConfig, split: str, limit: int | None = None) -> tuple[int, ...]:
    """Image indices of one split in index order, optionally only the first `limit` of them."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    chosen = tuple(i for i, s in enumerate(assign_splits(cfg.n, cfg.seed)) if s == split)
    return chosen if limit is None else chosen[:limit]


def write_suite(out: str | Path, cfg: SuiteConfig, force: bool = False,
                only: tuple[int, ...] | None = None) -> SuiteSummary:
    """Generate `cfg.n` images (or just the indices in `only`) and their examples into `out`.

    `only` regenerates a subset byte-identically (e.g. the held-out test images the
    shipped model never saw) without drawing the rest; `out` is refused if it exists, unless `force`.
    """
    start = time.perf_counter()
    out = Path(out)
    splits = assign_splits(cfg.n, cfg.seed)
    wanted = range(cfg.n) if only is None else sorted(set(only))
    if wanted and not 0 <= wanted[0] <= wanted[-1] < cfg.n:
        raise DataError(f"only: image indices must lie in [0, {cfg.n}), found {wanted[0]}..{wanted[-1]}")
    images, examples, tasks = Counter(), Counter(), Counter()
    with staging_dir(out, force) as tmp:
        (tmp / IMAGE_DIR).mkdir()
        with contextlib.ExitStack() as stack:
            files = {s: stack.enter_context(open(tmp / f"{s}.jsonl", "w", encoding="utf-8", newline="\n"))
                     for s in (*SPLITS, SIMPLE_TRAIN)}
            for index in wanted:
                split = splits[index]
                image = generate_image(cfg.seed, index, cfg.res, cfg.layout)
                name = image_name(index)
                (tmp / name).write_bytes(image.png)
                for target in image.targets:
                    line = example_line(name, target) + "\n"
                    files[split].write(line)
                    if split == "train" and image.simple:
                        files[SIMPLE_TRAIN].write(line)
                        examples[SIMPLE_TRAIN] += 1
                    tasks[target.task] += 1
                images[split] += 1
                examples[split] += len(image.targets)
        meta = _meta(cfg, images, examples, tasks)
        if only is not None:
            meta["only_indices"] = list(wanted)  # a subset of the suite: these images, identical to the full run's
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return SuiteSummary(out, {s: images[s] for s in SPLITS}, {s: examples[s] for s in SPLITS},
                        dict(sorted(tasks.items())), time.perf_counter() - start, examples[SIMPLE_TRAIN])


def is_current(out: str | Path, cfg: SuiteConfig) -> bool:
    """Whether `out` already holds the whole suite `cfg` describes, from this generator version (reusable)."""
    try:
        meta = json.loads((Path(out) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = {"generator_version": GENERATOR_VERSION, "seed": cfg.seed, "res": cfg.res, "layout": cfg.layout,
              "n_images": cfg.n}
    return isinstance(meta, dict) and "only_indices" not in meta and all(meta.get(k) == v for k, v in wanted.items())
