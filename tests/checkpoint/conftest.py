"""Tiny-variant params and the same params written in every checkpoint format (written once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ckpt_helpers import DTYPES

from pg2edge.checkpoint import random_params, write_hf, write_npz
from pg2edge.config import get_config

SHARD_BYTES = 64 * 1024  # small enough that the tiny model needs several shards


@pytest.fixture(scope="session")
def cfg():
    return get_config("tiny")


@pytest.fixture(scope="session")
def params(cfg) -> dict[str, np.ndarray]:
    return random_params(cfg, seed=0)


@pytest.fixture(scope="session")
def written(tmp_path_factory, cfg, params) -> dict[tuple[str, str], Path]:
    """(format, dtype name) -> path, for npz / safetensors / safetensors-sharded x float32 / bfloat16."""
    root = tmp_path_factory.mktemp("written")
    paths = {}
    for name, dtype in DTYPES.items():
        paths["npz", name] = write_npz(root / f"{name}.npz", params, dtype=dtype)
        paths["safetensors", name] = write_hf(root / f"hf-{name}", params, cfg, dtype=dtype)
        paths["safetensors-sharded", name] = write_hf(root / f"hf-sharded-{name}", params, cfg, dtype=dtype,
                                                      shard_bytes=SHARD_BYTES)
    return paths
