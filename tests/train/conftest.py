"""Tiny synthetic data (a few PNGs + JSONL), a tiny source checkpoint, and the options most tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pg2edge.checkpoint import random_params, write_npz
from pg2edge.config import get_config
from pg2edge.train import TrainOptions

from .helpers import CACHE, OWN_CACHE, write_jsonl

COLORS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (35, 75, 225), "yellow": (245, 215, 40)}
SHAPES = ("square", "circle")


@pytest.fixture(scope="session", autouse=True)
def _jax_cache():
    yield
    if OWN_CACHE:
        shutil.rmtree(CACHE, ignore_errors=True)


def _image(rgb: tuple[int, int, int], shape: str, size: int = 56) -> Image.Image:
    a = np.full((size, size, 3), 128, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    inside = (np.abs(yy - 28) < 14) & (np.abs(xx - 28) < 14) if shape == "square" else \
        (yy - 28) ** 2 + (xx - 28) ** 2 < 14 ** 2
    a[inside] = rgb
    return Image.fromarray(a)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """8 images (4 colours x 2 shapes); train.jsonl = all 8 captions, small.jsonl = 4 of them, val.jsonl = 5."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    rows = []
    for color, rgb in COLORS.items():
        for shape in SHAPES:
            name = f"images/{color}_{shape}.png"
            _image(rgb, shape).save(root / name)
            rows.append({"image": name, "prefix": "caption en", "suffix": f"a {color} {shape}"})
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "small.jsonl", rows[::2])
    write_jsonl(root / "val.jsonl", rows[1::2] + rows[:1])
    return root


@pytest.fixture(scope="session")
def source_ckpt(tmp_path_factory) -> Path:
    """Tiny random weights in big_vision .npz (so runs start from a real checkpoint file)."""
    path = tmp_path_factory.mktemp("source") / "tiny.npz"
    write_npz(path, random_params(get_config("tiny"), seed=3, scale=0.05))
    return path


@pytest.fixture
def base_opts(data_dir, source_ckpt, tmp_path) -> TrainOptions:
    """batch 4, accum 1, f32, all trainable, 24 text tokens: the shapes most tests share."""
    return TrainOptions(data=data_dir / "train.jsonl", out=tmp_path / "run", steps=3, batch=4,
                        checkpoint=source_ckpt, lr=1e-3, warmup=0.0, max_text_len=24, save_every=0, log_every=1)
