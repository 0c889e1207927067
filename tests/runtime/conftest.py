"""Bundles converted once per session from one tiny random checkpoint written in big_vision's format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pg2edge.checkpoint.vae import random_vae, write_vae
from pg2edge.export.convert import ConvertOptions, convert
from pg2edge.export.stages import STAGE_BYTES

MAX_LEN = 96
PREFILL = (8, 24)


@pytest.fixture(scope="session")
def vae_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae-oid.npz"
    write_vae(path, random_vae(seed=0, embed_dim=16))
    return path


@pytest.fixture(scope="session")
def make_bundle(tiny_checkpoint, vae_file, tmp_path_factory):
    """Convert (memoized) tiny bundles: make_bundle(quant, formats)."""
    cache = {}

    def make(quant: str = "f32", formats: tuple[str, ...] = ("onnx",), vae: bool = False, accuracy_level: int = 4,
             stage_bytes: int = STAGE_BYTES):
        key = (quant, formats, vae, accuracy_level, stage_bytes)
        if key not in cache:
            out = tmp_path_factory.mktemp("bundles") / f"{quant}-{'-'.join(formats)}-{int(vae)}-{accuracy_level}"
            convert(ConvertOptions(size="tiny", out=out, checkpoint=tiny_checkpoint, formats=formats,
                                   quant=quant, accuracy_level=accuracy_level, max_len=MAX_LEN, prefill=PREFILL,
                                   vae=vae_file if vae else None, stage_bytes=stage_bytes))
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    rs = np.random.RandomState(0)
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray(rs.randint(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return path
