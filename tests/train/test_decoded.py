"""`DecodedImages`: each training image decoded once, and every read exactly `preprocess`'s output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pg2edge.errors import ImageError
from pg2edge.preprocess import RESIZE_FILTERS, preprocess
from pg2edge.train.decoded import DecodedImages


def _png(path, size: int, seed: int = 0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("resize_filter", list(RESIZE_FILTERS))
def test_an_image_at_the_model_size_is_read_from_memory_after_the_first_decode(tmp_path, resize_filter):
    path = _png(tmp_path / "a.png", 28)
    want = preprocess(path, 28, resize_filter)
    decoded = DecodedImages(28, resize_filter)
    np.testing.assert_array_equal(decoded.pixels(path), want)
    path.unlink()  # a second read must not touch the file
    np.testing.assert_array_equal(decoded.pixels(path), want)
    assert len(decoded) == 1


def test_an_image_that_needs_resampling_is_resampled_as_preprocess_does_and_never_kept(tmp_path):
    path = _png(tmp_path / "big.png", 40)
    decoded = DecodedImages(28)
    np.testing.assert_array_equal(decoded.pixels(path), preprocess(path, 28))
    assert len(decoded) == 0


def test_images_past_the_byte_budget_are_decoded_on_every_read(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", 14, seed=i) for i in range(3)]
    decoded = DecodedImages(14, budget_bytes=2 * 14 * 14 * 3)  # room for two
    batch = decoded.batch(paths)
    assert batch.shape == (3, 14, 14, 3) and len(decoded) == 2
    np.testing.assert_array_equal(batch, np.stack([preprocess(p, 14) for p in paths]))
    paths[2].unlink()
    with pytest.raises(ImageError, match="2.png"):  # the third was not kept: it is decoded again, and is gone
        decoded.pixels(paths[2])


def test_a_runs_batches_fill_one_cache_and_equal_batches_decoded_afresh(tmp_path):
    from pg2edge.config import get_config
    from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer
    from pg2edge.train.data import gather, load_dataset, step_indices

    from .helpers import write_jsonl

    cfg = get_config("tiny", 56)
    rows = [{"image": _png(tmp_path / f"{i}.png", 56, seed=i).name, "prefix": "caption en", "suffix": "a"}
            for i in range(3)]
    tok = Tokenizer.from_bytes(build_synthetic_tokenizer(2048))
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows * 2), tok, 16)
    decoded = DecodedImages(cfg.resolution, cfg.resize_filter)
    for step in range(3):
        idx = step_indices(ds, 0, step, 4, 1)
        np.testing.assert_array_equal(gather(ds, cfg, idx, decoded=decoded)["pixels"], gather(ds, cfg, idx)["pixels"])
    assert len(decoded) == 3  # six lines, three files: each decoded once


def test_warm_decodes_ahead_in_order_until_the_budget_or_an_image_that_needs_resampling(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", 14, seed=i) for i in range(4)]
    want = [preprocess(p, 14) for p in paths]
    decoded = DecodedImages(14, budget_bytes=3 * 14 * 14 * 3)  # room for three
    assert decoded.warm([paths[1], paths[0], paths[1], paths[2], paths[3]]) == 3
    for i in (0, 1, 2):
        paths[i].unlink()  # kept: no later read touches the file
        np.testing.assert_array_equal(decoded.pixels(paths[i]), want[i])
    np.testing.assert_array_equal(decoded.pixels(paths[3]), want[3])  # past the budget: decoded on read

    big = _png(tmp_path / "big.png", 20)
    late = _png(tmp_path / "late.png", 14, seed=9)
    fresh = DecodedImages(14)
    assert fresh.warm([paths[3], big, late]) == 1  # stops at the first image that would be resampled
    late.unlink()
    with pytest.raises(ImageError, match="late.png"):
        fresh.pixels(late)


def test_images_ahead_are_the_images_a_run_reads_in_reading_order(tmp_path):
    from pg2edge.tokenizer import Tokenizer, build_synthetic_tokenizer
    from pg2edge.train.data import host_rows, images_ahead, load_dataset, step_indices

    from .helpers import write_jsonl

    rows = [{"image": _png(tmp_path / f"{i}.png", 14, seed=i).name, "prefix": "caption en", "suffix": "a"}
            for i in range(7)]
    tok = Tokenizer.from_bytes(build_synthetic_tokenizer(2048))
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows * 3), tok, 16)
    for start, end, batch, accum, host in ((0, 5, 4, 1, 0), (3, 90, 2, 2, 1), (2, 3, 4, 1, 1)):  # 90: windows
        read = [ds.images[i] for step in range(start, end)
                for i in host_rows(step_indices(ds, 5, step, batch, accum), host, 2).reshape(-1)]
        assert list(images_ahead(ds, 5, start, end, batch, accum, host, 2)) == read


def test_warm_on_threads_keeps_the_same_bytes_and_reads_its_paths_lazily(tmp_path):
    from pg2edge.train.decoded import WARM_CHUNK

    paths = [_png(tmp_path / f"{i}.png", 14, seed=i) for i in range(5)]
    pulled = []

    def endless():
        for i in range(10 * WARM_CHUNK):
            pulled.append(i)
            yield paths[i % 5]

    decoded = DecodedImages(14, budget_bytes=4 * 14 * 14 * 3)  # room for four of the five
    assert decoded.warm(endless(), workers=2) == 4
    assert len(pulled) <= 2 * WARM_CHUNK  # stopped at the chunk where the budget ran out
    for p in paths[:4]:
        np.testing.assert_array_equal(decoded.pixels(p), preprocess(p, 14))


def test_stream_windows_concatenate_to_the_stream():
    from pg2edge.train.data import stream_indices, stream_windows

    for start, count, window in ((0, 50, 7), (13, 40, 64), (5, 21, 21)):
        parts = list(stream_windows(3, 11, start, count, window))
        assert max(len(p) for p in parts) <= window
        np.testing.assert_array_equal(np.concatenate(parts), stream_indices(3, 11, start, count))
