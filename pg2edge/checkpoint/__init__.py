"""Checkpoint readers/writers: big_vision `.npz` and Hugging Face safetensors <-> one flat param dict.

The param tree is the flat big_vision dict of `param_layout.param_shapes(cfg)`
(`"img/embedding/kernel" -> np.ndarray`, layers stacked on axis 0);
`param_layout.unflatten` turns it into the nested tree the model takes.
Everything here is numpy + ml_dtypes + stdlib (no jax/torch/safetensors), never
unpickles, validates headers before reading data, and reports every problem as
a one-line `CheckpointError` naming the file and key.
"""

from pg2edge.checkpoint.detect import FORMATS, detect_format, detect_variant
from pg2edge.checkpoint.hf import write_hf
from pg2edge.checkpoint.lazy import Lazy, LazyStack
from pg2edge.checkpoint.loader import describe, iter_checkpoint, lazy_checkpoint, load_checkpoint
from pg2edge.checkpoint.npz import write_npz
from pg2edge.checkpoint.random_init import random_params

__all__ = [
    "FORMATS",
    "Lazy",
    "LazyStack",
    "describe",
    "detect_format",
    "detect_variant",
    "iter_checkpoint",
    "lazy_checkpoint",
    "load_checkpoint",
    "random_params",
    "write_hf",
    "write_npz",
]
