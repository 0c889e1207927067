"""Where a run starts: the variant, its starting weights and its tokenizer.

`--checkpoint` is a big_vision `.npz`, an HF safetensors file/directory, or
the output directory of an earlier `pg2edge finetune`; the last stands for
its `params.npz`, its `config.json` (which keeps fields shapes cannot show,
e.g. the final-logit soft-cap) and, unless `--tokenizer` is given, its
`tokenizer.model`, so fine-tunes chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pg2edge.checkpoint import detect_variant, load_checkpoint
from pg2edge.config import ConfigError, ModelConfig, config_from_dict, get_config
from pg2edge.param_layout import unflatten
from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer
from pg2edge.train.artifacts import CONFIG, PARAMS, TOKENIZER
from pg2edge.train.options import TrainOptions


def _run_dir(path: Path | None) -> Path | None:
    """`path` if it is an earlier finetune output directory, else None."""
    return path if path is not None and path.is_dir() and (path / PARAMS).is_file() else None


def weights_file(path: Path) -> Path:
    """The file (or HF directory) holding the weights `--checkpoint` names."""
    run = _run_dir(path)
    return run / PARAMS if run is not None else path


def resolve_config(opts: TrainOptions) -> ModelConfig:
    """The variant: from --size/--res, or detected from the checkpoint's headers (and checked against them)."""
    if opts.checkpoint is None:
        return get_config(opts.size, opts.res)
    cfg = detect_variant(weights_file(opts.checkpoint))
    run = _run_dir(opts.checkpoint)
    if run is not None and (run / CONFIG).is_file():
        try:
            saved = config_from_dict(json.loads((run / CONFIG).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{run / CONFIG}: not a pg2edge model config ({e})") from None
        if saved.name != cfg.name:
            raise ConfigError(f"{run / CONFIG}: says {saved.name}, but {run / PARAMS} holds {cfg.name}")
        cfg = saved
    if (opts.size is not None and str(opts.size).lower() != cfg.size.lower()) or \
            (opts.res is not None and opts.res != cfg.resolution):
        given = " ".join(f"--{k} {v}" for k, v in (("size", opts.size), ("res", opts.res)) if v is not None)
        raise ConfigError(f"{opts.checkpoint}: holds variant {cfg.name}, but {given} was given")
    return cfg


def load_source(opts: TrainOptions, cfg: ModelConfig) -> dict | None:
    """The checkpoint's weights as a nested f32 numpy tree (None for --random-init: drawn on the devices)."""
    if opts.checkpoint is None:
        return None
    _, flat = load_checkpoint(weights_file(opts.checkpoint), cfg, dtype=np.float32)
    return unflatten(flat)


def suite_words() -> tuple[str, ...]:
    """The synthetic task suite's vocabulary, when that package is installed (whole-word pieces)."""
    try:
        from pg2edge.tasks import SUITE_WORDS
    except ImportError:
        return ()
    return tuple(SUITE_WORDS)


def resolve_tokenizer(opts: TrainOptions, cfg: ModelConfig) -> Tokenizer:
    """--tokenizer, an earlier run's, or the synthetic one (with the task suite's words); checked against cfg."""
    run = _run_dir(opts.checkpoint)
    path = opts.tokenizer or (run / TOKENIZER if run is not None and (run / TOKENIZER).is_file() else None)
    if path is not None:
        tok = Tokenizer.from_file(path)
    else:
        tok = Tokenizer.from_bytes(build_synthetic_tokenizer(cfg.text.vocab_size, extra_words=suite_words()),
                                   name="synthetic")
    tok.check_config(cfg.text)
    return tok
