"""The finished model as plain files: `params.npz` (big_vision layout), `tokenizer.model`, `config.json`.

These are what `pg2edge convert --checkpoint DIR/params.npz --tokenizer
DIR/tokenizer.model` reads: LoRA adapters are already merged and QAT left
no trace (the weights are float; convert applies the same recipe the
forward pass simulated). Only process 0 writes, one tensor at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np

from pg2edge.checkpoint import write_npz
from pg2edge.checkpoint.fsutil import atomic_file
from pg2edge.config import ModelConfig, config_to_dict
from pg2edge.errors import TokenizerError
from pg2edge.param_layout import flatten
from pg2edge.tokenizer import Tokenizer
from pg2edge.train.sharding import to_host

PARAMS, TOKENIZER, CONFIG = "params.npz", "tokenizer.model", "config.json"


def write_tokenizer(out: Path, tok: Tokenizer) -> Path:
    """Write `DIR/tokenizer.model` at the start; a resumed run must be using the same one."""
    path = Path(out) / TOKENIZER
    if path.exists():
        if path.read_bytes() != tok.serialized():
            raise TokenizerError(f"{path}: this run's tokenizer ({tok.name}) differs from the one {out} was "
                                 f"trained with; pass --tokenizer {path} to resume")
        return path
    if jax.process_index() == 0:
        with atomic_file(path) as f:
            f.write(tok.serialized())
    return path


def _host_items(params: dict) -> Iterable[tuple[str, np.ndarray]]:
    for key, value in flatten(params).items():
        yield key, to_host(value)  # every host takes part in the gather; one tensor at a time


def write_model(out: Path, params: dict, cfg: ModelConfig) -> Path:
    """Write `DIR/params.npz` and `DIR/config.json` (the variant, incl. final_logit_softcap) atomically."""
    out = Path(out)
    items = _host_items(params)
    if jax.process_index() != 0:
        for _ in items:
            pass
        return out / PARAMS
    write_npz(out / PARAMS, items)
    with atomic_file(out / CONFIG) as f:
        f.write((json.dumps(config_to_dict(cfg), indent=2) + "\n").encode("utf-8"))
    return out / PARAMS
