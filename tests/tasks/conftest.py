"""Shared suite fixtures: one small suite on disk, a few hundred in-memory images, the suite's tokenizer."""

from __future__ import annotations

import pytest

from pg2edge.tasks import SUITE_WORDS, SuiteConfig, generate_image, write_suite

SEED = 7
RES = 112


@pytest.fixture(scope="session")
def suite_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "suite"
    summary = write_suite(out, SuiteConfig(n=30, seed=SEED, res=RES))
    return out, summary


@pytest.fixture(scope="session")
def images():
    """300 images at 112 px: enough to see every task, shape, colour and count."""
    return [generate_image(SEED, i, RES) for i in range(300)]


@pytest.fixture(scope="session")
def suite_tokenizer():
    from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer

    return Tokenizer.from_bytes(build_synthetic_tokenizer(2048, extra_words=SUITE_WORDS))
