"""Examples -> fixed-shape numpy batches: texts encoded once, images decoded once per run, order fixed by the seed.

The example stream is an endless concatenation of per-epoch permutations,
each drawn from `(seed, epoch)`, so the batch of any step is a pure function
of (seed, step) and a resumed run continues the exact data order from the
step alone. A train batch is a dict of arrays with leading axes
[accum, batch]; in a multi-host run each host decodes only its own rows
(`host_rows`) and `sharding.put_batch` assembles the global array.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from pg2edge.config import ModelConfig
from pg2edge.errors import ImageError
from pg2edge.preprocess import original_size
from pg2edge.tasks import DataError, Example, read_examples
from pg2edge.tokenizer import Tokenizer
from pg2edge.train.decoded import WARM_WORKERS, DecodedImages

T = TypeVar("T")
TEXT_FIELDS = ("tokens", "mask_ar", "mask_loss", "input_mask")
LENGTH_STEP = 8  # a length-sorted step pads its text to a multiple of this many tokens
Batch = dict[str, np.ndarray]  # pixels [K,B,R,R,3], tokens/mask_ar/mask_loss/input_mask [K,B,T], weight [K,B]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Every example's encoded text (fixed length T) and image path; pixels are decoded per batch."""

    source: Path
    images: tuple[Path, ...]
    tokens: np.ndarray  # int32 [N, T]
    mask_ar: np.ndarray  # int32 [N, T]: 0 prefix, 1 suffix
    mask_loss: np.ndarray  # int32 [N, T]: 1 on target tokens
    input_mask: np.ndarray  # int32 [N, T]: 0 on padding
    truncated: int  # examples that lost target tokens to --max-text-len
    skipped: tuple[str, ...]  # one error line per bad JSONL line dropped under --skip-bad
    fingerprint: str  # sha256 of the JSONL bytes: a resumed run must train on the same file
    pool: np.ndarray  # int64: the example indices one training epoch permutes (each once, or task-balanced)

    def __len__(self) -> int:
        return len(self.images)


class EncodedText(NamedTuple):
    """One example's text at the static length: int32 [T] arrays, and whether targets were cut off."""

    tokens: np.ndarray
    mask_ar: np.ndarray
    mask_loss: np.ndarray
    input_mask: np.ndarray
    truncated: bool


def encode_text(tok: Tokenizer, prefix: str, suffix: str, length: int) -> EncodedText:
    """`Tokenizer.encode_prompt`, truncated at the end to `length` tokens or zero-padded up to it."""
    prompt = tok.encode_prompt(prefix, suffix)
    n = min(len(prompt), length)
    arrays = [np.zeros(length, np.int32) for _ in range(4)]
    for out, src in zip(arrays[:3], (prompt.tokens, prompt.mask_ar, prompt.mask_loss), strict=True):
        out[:n] = src[:n]
    arrays[3][:n] = 1
    return EncodedText(*arrays, truncated=bool(prompt.mask_loss[n:].any()))


def _readable(ex: Example, source: Path, checked: dict[Path, str | None]) -> Example:
    """Read the image header now, so a corrupt image fails at load with its JSONL line, not mid-run; `checked`
    keeps each image's verdict (None: readable), since the suite gives one image five or six lines."""
    if ex.image not in checked:
        try:
            original_size(ex.image)
            checked[ex.image] = None
        except ImageError as e:
            checked[ex.image] = str(e)
    if checked[ex.image] is not None:
        raise DataError(f"{source}:{ex.line}: {checked[ex.image]}")
    return ex


def balanced_pool(tasks: tuple[str, ...], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Example indices in which every task appears equally often, or in proportion to its weight in `weights`
    (1 if not named): each task's examples, in file order, repeated cyclically up to weight x the largest task's
    count (at weights >= 1 an epoch shows every example at least once)."""
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(task, []).append(i)
    most, weights = max(len(g) for g in groups.values()), weights or {}
    return np.concatenate([np.resize(np.asarray(g, np.int64), max(1, round(weights.get(task, 1.0) * most)))
                           for task, g in sorted(groups.items())])


def answer_class(suffix: str) -> str:
    """What `repeat_factors` balances a line on: how many objects it places (four `<loc>` tokens each), or,
    when it places none, the answer itself ("2", "red")."""
    return f"{suffix.count('<loc') // 4} objects" if "<loc" in suffix else suffix.strip()


def repeat_factors(tasks: tuple[str, ...], suffixes: tuple[str, ...], rare_in: tuple[str, ...]) -> np.ndarray:
    """How often each line appears in an epoch: repeat factor sampling (LVIS) within each task of `rare_in`,
    round(sqrt(f_max / f)) for a line whose answer class has share f of its task's lines (f_max: the most
    common class's), so a multi-object box list or a count of 3 is not drowned out by the single object and
    the count 1; 1 for every other line."""
    classes = [answer_class(s) if t in rare_in else "" for t, s in zip(tasks, suffixes, strict=True)]
    counts: dict[tuple[str, str], int] = {}
    for key in zip(tasks, classes, strict=True):
        counts[key] = counts.get(key, 0) + 1
    most: dict[str, int] = {}
    for (task, _), n in counts.items():
        most[task] = max(most.get(task, 0), n)
    return np.array([1 if t not in rare_in else max(1, int(np.floor(np.sqrt(most[t] / counts[t, c]) + 0.5)))
                     for t, c in zip(tasks, classes, strict=True)], np.int64)


def select_tasks(examples: list[Example], tasks: tuple[str, ...], source: Path) -> list[Example]:
    """The examples whose `task` field is one of `tasks` (a task-by-task curriculum trains on a subset)."""
    untagged = next((ex for ex in examples if not ex.task), None)
    if untagged is not None:
        raise DataError(f"{source}:{untagged.line}: --tasks needs a \"task\" field on every line")
    kept = [ex for ex in examples if ex.task in tasks]
    if not kept:
        present = ", ".join(sorted({ex.task for ex in examples}))
        raise DataError(f"{source}: no line has a task in {', '.join(tasks)} (tasks present: {present})")
    return kept


def load_dataset(path: str | os.PathLike, tok: Tokenizer, length: int, skip_bad: bool = False,
                 balance_tasks: bool = False, tasks: tuple[str, ...] | None = None,
                 repeat_rare: tuple[str, ...] | None = None, task_weights: Mapping[str, float] | None = None
                 ) -> Dataset:
    """Read, check and encode a JSONL file (bad lines: one-line DataError, or skipped under `skip_bad`).

    `balance_tasks`: training draws every task (the lines' `task` field) equally often, so a task with few
    examples per image (OCR: one) is not drowned out by the others. `tasks`: keep only those tasks' lines.
    `repeat_rare`: those tasks' lines are repeated by `repeat_factors` (before any task balancing).
    `task_weights`: balance the tasks, each drawn in proportion to its weight (1 if not named).
    """
    path = Path(path)
    read = read_examples(path, skip_bad=skip_bad)
    skipped, examples, checked = list(read.problems), [], {}
    for ex in (read.examples if tasks is None else select_tasks(read.examples, tasks, path)):
        try:
            examples.append(_readable(ex, path, checked))
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
    if not examples:
        raise DataError(f"{path}: no usable examples ({len(skipped)} bad lines skipped)")
    pool = np.arange(len(examples), dtype=np.int64)
    if balance_tasks or repeat_rare or task_weights:
        untagged = next((ex for ex in examples if not ex.task), None)
        if untagged is not None:
            raise DataError(f"{path}:{untagged.line}: task balancing and --repeat-rare need a \"task\" field "
                            "on every line")
        tagged = tuple(ex.task for ex in examples)
        for option, named in (("--repeat-rare", repeat_rare), ("--task-weights", task_weights)):
            unknown = sorted(set(named or ()) - set(tagged))
            if unknown:
                raise DataError(f"{path}: {option} names {', '.join(unknown)}, which no line has (tasks present: "
                                f"{', '.join(sorted(set(tagged)))})")
        if repeat_rare:
            pool = np.repeat(pool, repeat_factors(tagged, tuple(ex.suffix for ex in examples), repeat_rare))
        if balance_tasks or task_weights:
            pool = pool[balanced_pool(tuple(tagged[i] for i in pool), task_weights)]
    encoded = [encode_text(tok, ex.prefix, ex.suffix, length) for ex in examples]
    texts = {name: np.stack([getattr(e, name) for e in encoded]) for name in TEXT_FIELDS}
    return Dataset(source=path, images=tuple(ex.image for ex in examples), **texts,
                   truncated=sum(e.truncated for e in encoded), skipped=tuple(skipped),
                   fingerprint=hashlib.sha256(path.read_bytes()).hexdigest(), pool=pool)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch`: independent of every other epoch, identical on every host and rerun."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def stream_indices(seed: int, n: int, start: int, count: int) -> np.ndarray:
    """Example indices at stream positions [start, start + count) of the endless shuffled stream."""
    positions = np.arange(start, start + count)
    epochs, offsets = positions // n, positions % n
    out = np.empty(count, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = epoch_permutation(seed, int(epoch), n)[offsets[sel]]
    return out


def host_rows(indices_kb: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This host's contiguous block of each micro-batch (the rows its devices hold under the batch sharding)."""
    rows = indices_kb.shape[1] // process_count
    return indices_kb[:, process_index * rows:(process_index + 1) * rows]


def gather(ds: Dataset, cfg: ModelConfig, indices_kb: np.ndarray, weight_kb: np.ndarray | None = None,
           length: int | None = None, decoded: DecodedImages | None = None) -> Batch:
    """Decode the images (through a run's `decoded`, else each afresh) and pick the encoded texts of `indices`
    [K, B] into one batch, cut to `length` text tokens if given (it must hold every picked line: only padding goes)."""
    flat = indices_kb.reshape(-1)
    if decoded is None:
        decoded = DecodedImages(cfg.resolution, cfg.resize_filter, budget_bytes=0)
    pixels = decoded.batch([ds.images[i] for i in flat])
    shape = indices_kb.shape
    batch = {name: getattr(ds, name)[flat, :length].reshape(shape + (-1,)) for name in TEXT_FIELDS}
    batch["pixels"] = pixels.reshape(shape + pixels.shape[1:])
    batch["weight"] = np.ones(shape, np.float32) if weight_kb is None else weight_kb.astype(np.float32)
    return batch


def step_indices(ds: Dataset, seed: int, step: int, batch: int, accum: int, sort_window: int = 1) -> np.ndarray:
    """Example indices [accum, batch] of optimizer step `step` (0-based).

    With `sort_window` W > 1, the W steps of each window share their examples, sorted by text length, each step
    taking one slice of W in a seeded order: a step's lines are of similar length, so it pads them only to its
    own longest (`padded_length`), while every example is still drawn exactly when the stream draws it.
    """
    per_step = batch * accum
    if sort_window <= 1:
        return ds.pool[stream_indices(seed, len(ds.pool), step * per_step, per_step)].reshape(accum, batch)
    window, slot = divmod(step, sort_window)
    drawn = ds.pool[stream_indices(seed, len(ds.pool), window * sort_window * per_step, sort_window * per_step)]
    ranked = drawn[np.argsort(ds.input_mask[drawn].sum(1), kind="stable")]
    part = int(np.random.default_rng([seed, window]).permutation(sort_window)[slot])
    return ranked[part * per_step:(part + 1) * per_step].reshape(accum, batch)


def padded_length(ds: Dataset, indices: np.ndarray) -> int:
    """Text tokens a length-sorted step pads to: its longest line, rounded up to a multiple of LENGTH_STEP (a
    handful of shapes to compile), at most the dataset's length."""
    longest = int(ds.input_mask[indices.reshape(-1)].sum(1).max())
    return min(-(-longest // LENGTH_STEP) * LENGTH_STEP, ds.tokens.shape[1])


LOADER_NICENESS = 10  # added to the loader thread's nice value: it yields the cores to the step's devices


def _yield_to_compute() -> None:
    """Lower the calling thread's scheduling priority (Linux: `setpriority` on a thread id changes that thread
    only). With one XLA device per core, a loader that takes a core from one device makes the other wait for
    it at the gradient all-reduce; at low priority it runs in the cores' idle moments instead."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)
        except OSError:  # not permitted here: the loader keeps its priority
            pass


def prefetched(load: Callable[[int], T], start: int) -> Iterator[T]:
    """load(start), load(start + 1), ...: the next one is made on a thread while the caller uses this one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg2edge-data", initializer=_yield_to_compute) as pool:
        pending = pool.submit(load, start)
        step = start
        while True:
            step += 1
            ready, pending = pending, pool.submit(load, step)
            yield ready.result()


AHEAD_WINDOW = 64  # steps whose draws a look ahead at a run's images computes at a time


def stream_windows(seed: int, n: int, start: int, count: int, window: int) -> Iterator[np.ndarray]:
    """`stream_indices(seed, n, start, count)` in consecutive pieces of at most `window` positions, each computed
    only when asked for (a look ahead that stops early never draws the rest)."""
    for first in range(start, start + count, window):
        yield stream_indices(seed, n, first, min(window, start + count - first))


def images_ahead(ds: Dataset, seed: int, start_step: int, end_step: int, batch: int, accum: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Path]:
    """The images this host reads in steps [start_step, end_step), in reading order (window by window when
    steps are length-sorted, which only reorders a window's own examples), computed lazily a few steps ahead."""
    per_step = batch * accum
    for part in stream_windows(seed, len(ds.pool), start_step * per_step, (end_step - start_step) * per_step,
                               AHEAD_WINDOW * per_step):
        rows = host_rows(ds.pool[part].reshape(-1, batch), process_index, process_count)
        yield from (ds.images[i] for i in rows.flat)


def train_batches(ds: Dataset, cfg: ModelConfig, seed: int, start_step: int, batch: int, accum: int,
                  process_index: int = 0, process_count: int = 1, sort_window: int = 1,
                  end_step: int | None = None) -> Iterator[Batch]:
    """This host's batches for steps start_step, start_step + 1, ...; the next one is decoded while a step runs.
    Length-sorted steps (`sort_window` > 1) are cut to `padded_length` of the whole step, the same on every host.
    Each image file is decoded once (`DecodedImages`); given `end_step`, the images of steps up to it are decoded
    before the first batch, on the loader thread, while the caller's first step compiles."""
    decoded = DecodedImages(cfg.resolution, cfg.resize_filter)

    def load(step: int) -> Batch:
        if step == start_step and end_step is not None:
            decoded.warm(images_ahead(ds, seed, start_step, end_step, batch, accum, process_index, process_count),
                         workers=WARM_WORKERS)
        picked = step_indices(ds, seed, step, batch, accum, sort_window)
        length = padded_length(ds, picked) if sort_window > 1 else None
        return gather(ds, cfg, host_rows(picked, process_index, process_count), length=length, decoded=decoded)

    return prefetched(load, start_step)


def eval_batches(ds: Dataset, cfg: ModelConfig, batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
    """The whole dataset once, in order, as [1, batch] batches; the last is padded with weight-0 rows."""
    for start in range(0, len(ds), batch):
        idx = np.arange(start, start + batch)
        weight = (idx < len(ds)).astype(np.float32)
        idx = np.where(idx < len(ds), idx, 0)[None]
        yield gather(ds, cfg, host_rows(idx, process_index, process_count),
                     host_rows(weight[None], process_index, process_count))
