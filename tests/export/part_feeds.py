"""Inputs for one split part: random activations and ids, a valid length and position that fit its shapes."""

from __future__ import annotations

import numpy as np


def random_feeds(part, rs: np.random.RandomState, valid_len: int = 20, pos: int = 30, vocab: int = 2000) -> dict:
    """Feeds for `part` by its TensorSpecs (tiny shapes: 16 image tokens, max_len 64)."""
    feeds = {}
    for spec in part.inputs:
        if spec.name == "valid_len":
            feeds[spec.name] = np.full(spec.shape, valid_len, np.int32)
        elif spec.name == "pos":
            feeds[spec.name] = np.full(spec.shape, pos, np.int32)
        elif spec.dtype == "int32":
            feeds[spec.name] = rs.randint(0, vocab, spec.shape).astype(np.int32)
        else:
            feeds[spec.name] = rs.normal(0, 1, spec.shape).astype(np.float32)
    return feeds
