"""Everything `pg2edge finetune` takes, as one frozen dataclass checked before any work starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pg2edge.config import ConfigError
from pg2edge.quantize.recipes import BLOCK_SIZES
from pg2edge.train.trainable import PATTERNS

DTYPES = ("f32", "bf16")
TRAINABLE = tuple(PATTERNS)  # all, attn, decoder, lora
QAT_RECIPES = ("int4", "int8", "mixed")
# Options that fix the state's tree structure or the data order: a resumed run must repeat them.
RESUME_KEYS = ("checkpoint", "size", "res", "random_init", "batch", "accum", "dtype", "trainable", "lora_rank",
               "lora_alpha", "qat", "qat_block", "seed", "max_text_len", "skip_bad", "balance_tasks", "tasks",
               "repeat_rare", "task_weights", "sort_window")


@dataclass(frozen=True)
class TrainOptions:
    """A fine-tuning run: source weights, data, schedule, what trains, and where it all goes."""

    data: Path
    out: Path
    steps: int
    batch: int  # examples per micro-batch; one optimizer step sees batch * accum
    checkpoint: Path | None = None
    size: str | None = None
    res: int | None = None
    random_init: bool = False
    tokenizer: Path | None = None
    lr: float = 1e-3
    warmup: float = 0.1  # fraction of `steps` spent in linear warmup
    weight_decay: float = 0.0
    accum: int = 1
    dtype: str = "f32"
    trainable: str = "all"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    qat: str | None = None
    qat_block: int = 32
    distill: float = 0.0  # weight of KL to the --checkpoint model's own predictions (0: labels only)
    eval_every: int = 0
    eval_data: Path | None = None
    seed: int = 0
    max_text_len: int = 64
    skip_bad: bool = False
    balance_tasks: bool = False  # draw every task of --data equally often
    tasks: tuple[str, ...] | None = None  # train on the lines of these tasks only (None: all lines)
    repeat_rare: tuple[str, ...] | None = None  # tasks whose rare answer classes are repeated (data.repeat_factors)
    task_weights: tuple[tuple[str, float], ...] | None = None  # (task, share weight): balanced draws, weighted
    sort_window: int = 1  # steps whose examples are sorted by text length together (data.step_indices; 1: off)
    save_every: int = 500
    log_every: int = 1
    fsdp: int | None = None  # devices per FSDP group; None = the local device count (1 on CPU)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad option."""
        if (self.checkpoint is None) == (not self.random_init):
            raise ConfigError("give exactly one of --checkpoint PATH or --size S --random-init")
        if self.random_init and self.size is None:
            raise ConfigError("--random-init needs --size")
        for name in ("steps", "batch", "accum", "max_text_len", "log_every", "lora_rank", "sort_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, found {getattr(self, name)}")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, found {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, found {self.lr}")
        if not 0 <= self.warmup <= 1:
            raise ConfigError(f"--warmup is a fraction of --steps in [0, 1], found {self.warmup}")
        if self.weight_decay < 0:
            raise ConfigError(f"--wd must be >= 0, found {self.weight_decay}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"--trainable {self.trainable!r}: expected one of {', '.join(TRAINABLE)}")
        if self.qat is not None and self.qat not in QAT_RECIPES:
            raise ConfigError(f"--qat {self.qat!r}: expected one of {', '.join(QAT_RECIPES)}")
        if self.qat_block not in BLOCK_SIZES:
            raise ConfigError(f"--qat-block {self.qat_block}: expected one of {', '.join(map(str, BLOCK_SIZES))}")
        if not 0 <= self.distill <= 1:
            raise ConfigError(f"--distill is a weight in [0, 1], found {self.distill}")
        if self.distill and self.checkpoint is None:
            raise ConfigError("--distill needs --checkpoint: the teacher is the model being fine-tuned, as loaded")
        if self.eval_every and self.eval_data is None:
            raise ConfigError("--eval-every needs --eval-data")
        if self.fsdp is not None and self.fsdp < 1:
            raise ConfigError(f"--fsdp must be >= 1, found {self.fsdp}")
        for name in ("tasks", "repeat_rare"):
            value = getattr(self, name)
            if value is not None and not (value and all(t.strip() for t in value)):
                raise ConfigError(f"--{name.replace('_', '-')}: expected a comma list of task names, found {value!r}")
        names = [name for name, _ in self.task_weights or ()]
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ConfigError(f"--task-weights: expected distinct task names, found {', '.join(names)!r}")
        bad = next(((n, w) for n, w in self.task_weights or () if not (0 < w < float("inf"))), None)
        if bad:
            raise ConfigError(f"--task-weights: the weight of {bad[0]} must be a positive number, found {bad[1]}")
        if self.max_text_len < 3:
            raise ConfigError(f"--max-text-len {self.max_text_len} cannot hold bos, a prefix and a target")

    def resume_key(self) -> dict:
        """The JSON-ready options a resumed run must share with the run that wrote the checkpoint."""
        return {k: _jsonable(getattr(self, k)) for k in RESUME_KEYS}

    def to_dict(self) -> dict:
        """All options, JSON-ready (for the checkpoint metadata and logs)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def parse_task_weights(value: str | None) -> tuple[tuple[str, float], ...] | None:
    """`ocr=2,count_shape=0.5` -> (("ocr", 2.0), ("count_shape", 0.5)): the command line's --task-weights."""
    if not value:
        return None
    return tuple(_task_weight(item) for item in value.split(","))


def _task_weight(item: str) -> tuple[str, float]:
    """One `TASK=WEIGHT` item of --task-weights (range checks are `FinetuneOptions`')."""
    name, sep, weight = item.partition("=")
    try:
        if sep:
            return name.strip(), float(weight)
    except ValueError:
        pass
    raise ConfigError(f"--task-weights: expected TASK=WEIGHT pairs, found {item.strip()!r}")


def _jsonable(value: object) -> object:
    """Paths resolved, so `run/x.npz` and `/abs/run/x.npz` compare equal on resume; tuples as JSON lists."""
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return str(Path(value).resolve()) if isinstance(value, Path) else value
