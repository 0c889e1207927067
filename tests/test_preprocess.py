"""Preprocessing: every PIL mode to RGB, EXIF orientation, bombs, truncation, exact scaling, filters."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pg2edge.errors import ImageError
from pg2edge.preprocess import RESIZE_FILTERS, load_image, original_size, preprocess, preprocess_batch


def _formula(values) -> np.ndarray:
    return np.asarray(values, np.float32) / np.float32(127.5) - np.float32(1.0)


def _save(im: Image.Image, path, fmt: str, **kw):
    im.save(path, fmt, **kw)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height`, with an empty IDAT: no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


# --- modes ----------------------------------------------------------------------------------------

def test_rgba_png_drops_alpha_without_compositing(tmp_path):
    px = np.zeros((6, 8, 4), np.uint8)
    px[..., :3] = (10, 20, 30)
    px[:, :4, 3] = 0  # fully transparent half keeps its colour
    path = _save(Image.fromarray(px), tmp_path / "rgba.png", "PNG")
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (8, 6)
    np.testing.assert_array_equal(np.asarray(im), np.broadcast_to([10, 20, 30], (6, 8, 3)))


def test_la_drops_alpha():
    im = load_image(Image.new("LA", (3, 2), (100, 0)))
    np.testing.assert_array_equal(np.asarray(im), np.full((2, 3, 3), 100))


def test_palette_png_with_transparency_uses_palette_colours(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 0), 1)
    path = _save(pal, tmp_path / "pal.png", "PNG", transparency=0)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and reopened.info.get("transparency") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = np.asarray(load_image(path))
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])  # transparent index keeps its colour
    np.testing.assert_array_equal(rgb[0, 1], [0, 255, 0])


def test_grayscale_and_bilevel_replicate_channels(tmp_path):
    path = _save(Image.new("L", (5, 3), 77), tmp_path / "gray.png", "PNG")
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.full((3, 5, 3), 77))
    bilevel = Image.new("1", (4, 4), 1)
    np.testing.assert_array_equal(np.asarray(load_image(bilevel)), np.full((4, 4, 3), 255))


def test_sixteen_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    values = (np.arange(12 * 10, dtype=np.uint32).reshape(10, 12) * 547).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "depth16.png", "PNG")
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")
    rgb = np.asarray(load_image(path))
    expected = (values >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)


def test_int32_and_float_modes():
    sixteen = np.array([[0, 256, 65535]], np.int32)
    np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(sixteen)))[0, :, 0], [0, 1, 255])
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(unit)))[0, :, 0], [0, 128, 255])
    wide = np.array([[-2.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(load_image(Image.fromarray(wide)))[0, :, 0], [0, 128, 255])


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 8), (0, 255, 0, 0)), tmp_path / "cmyk.jpg", "JPEG", quality=95)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb.shape == (8, 16, 3)
    assert np.abs(rgb - [255, 0, 255]).max() <= 8  # magenta


@pytest.mark.parametrize("orientation, top, bottom", [(6, "red", "blue"), (8, "blue", "red")])
def test_exif_orientation_is_applied(tmp_path, orientation, top, bottom):
    px = np.zeros((20, 40, 3), np.uint8)
    px[:, :20] = (255, 0, 0)  # stored: left half red, right half blue
    px[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(Image.fromarray(px), tmp_path / "rotated.jpg", "JPEG", quality=95, exif=exif.tobytes())
    im = load_image(path)
    assert im.size == (20, 40) == original_size(path)  # portrait after rotating 90 degrees
    rgb = np.asarray(im).astype(int)
    colours = {"red": [255, 0, 0], "blue": [0, 0, 255]}
    assert np.abs(rgb[5, 10] - colours[top]).max() < 40
    assert np.abs(rgb[35, 10] - colours[bottom]).max() < 40
    assert preprocess(path, 28).shape == (28, 28, 3)


def test_pil_input_is_not_mutated():
    src = Image.new("RGBA", (7, 5), (1, 2, 3, 4))
    out = load_image(src)
    assert out is not src and src.mode == "RGBA" and out.mode == "RGB"
    assert original_size(src) == (7, 5)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_an_image_error_naming_it(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=f"cut.{fmt.lower()}"):
        load_image(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ImageError, match="nothere.png.*no such"):
        load_image(tmp_path / "nothere.png")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"definitely not an image")
    with pytest.raises(ImageError, match="junk.jpg"):
        load_image(junk)
    with pytest.raises(ImageError, match="bytes"):
        load_image(b"\x89PNG\r\n\x1a\n garbage")


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path, monkeypatch):
    def no_decode(self):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    limit_before, filters_before = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    cases = [(100_000, 100_000, None),    # beyond 2x PIL's limit: PIL's DecompressionBombError
             (10_000, 10_000, 10**12),    # PIL's warning zone: the warning is an error too
             (5_000, 4_000, 1_000_000)]   # our own limit
    for width, height, max_pixels in cases:
        path = tmp_path / f"bomb_{width}.png"
        path.write_bytes(_png_header(width, height))
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        with pytest.raises(ImageError, match=f"bomb_{width}.png.*{width * height}") as info:
            load_image(path, **kwargs)
        assert "decompression bomb" in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == limit_before and warnings.filters == filters_before
    assert original_size(tmp_path / "bomb_5000.png") == (5_000, 4_000)


def test_small_pixel_limit_names_the_size(tmp_path):
    path = _save(Image.fromarray(_noise(48, 64)), tmp_path / "ok.png", "PNG")
    assert load_image(path, max_pixels=64 * 48).size == (64, 48)
    with pytest.raises(ImageError, match=r"ok.png: 64x48 = 3072 pixels"):
        load_image(path, max_pixels=3071)


# --- pixels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("resize_filter", list(RESIZE_FILTERS))
def test_output_shape_dtype_range(resize_filter):
    x = preprocess(Image.fromarray(_noise(37, 91)), 56, resize_filter)
    assert x.shape == (56, 56, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.9 and x.max() > 0.9


@pytest.mark.parametrize("resize_filter", list(RESIZE_FILTERS))
def test_constant_colour_gives_the_exact_formula(resize_filter):
    colour = (0, 10, 255)
    x = preprocess(Image.new("RGB", (50, 30), colour), 28, resize_filter)
    np.testing.assert_array_equal(x, np.broadcast_to(_formula(colour), (28, 28, 3)))
    assert x[0, 0, 0] == -1.0 and x[0, 0, 2] == 1.0


@pytest.mark.parametrize("resize_filter", list(RESIZE_FILTERS))
def test_same_size_input_is_only_rescaled(resize_filter):
    px = _noise(32, 32, seed=3)
    np.testing.assert_array_equal(preprocess(Image.fromarray(px), 32, resize_filter), _formula(px))


def test_resize_filter_is_respected():
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    img = Image.fromarray(np.repeat(board[..., None], 3, axis=-1))
    nearest = preprocess(img, 16, "nearest")
    bilinear = preprocess(img, 16, "bilinear")
    bicubic = preprocess(img, 16, "bicubic")
    assert set(np.unique(nearest)) <= {-1.0, 1.0}
    assert np.abs(bilinear).max() < 0.05  # antialiased: the checkerboard averages to mid-gray
    np.testing.assert_array_equal(bicubic, _formula(img.resize((16, 16), Image.Resampling.BICUBIC)))
    noise = Image.fromarray(_noise(61, 83))
    by_filter = {f: preprocess(noise, 24, f) for f in RESIZE_FILTERS}
    assert not np.allclose(by_filter["bilinear"], by_filter["bicubic"], atol=1e-3)
    # bilinear resizes in float: within one uint8 step of PIL's two-pass uint8 bilinear, not quantized
    uint8_bilinear = _formula(noise.resize((24, 24), Image.Resampling.BILINEAR))
    assert np.abs(by_filter["bilinear"] - uint8_bilinear).max() <= 1.0 / 127.5
    assert not np.allclose(by_filter["bilinear"] * 127.5, np.round(by_filter["bilinear"] * 127.5), atol=1e-3)


def test_unknown_filter_names_the_allowed_ones():
    with pytest.raises(ValueError, match="lanczos.*bilinear, bicubic, nearest"):
        preprocess(Image.new("RGB", (4, 4)), 8, "lanczos")
    with pytest.raises(ValueError, match="positive"):
        preprocess(Image.new("RGB", (4, 4)), 0)


def test_batch_matches_single_images(tmp_path):
    path = _save(Image.fromarray(_noise(20, 30, seed=1)), tmp_path / "a.png", "PNG")
    data = (tmp_path / "a.png").read_bytes()
    sources = [path, data, Image.fromarray(_noise(50, 10, seed=2))]
    batch = preprocess_batch(sources, 28, "bicubic")
    assert batch.shape == (3, 28, 28, 3) and batch.dtype == np.float32
    for i, src in enumerate(sources):
        np.testing.assert_array_equal(batch[i], preprocess(src, 28, "bicubic"))
    np.testing.assert_array_equal(batch[0], batch[1])
    assert preprocess_batch([], 28).shape == (0, 28, 28, 3)
