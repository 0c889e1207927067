"""Image -> model input: decode safely, fix orientation and mode, resize, scale to [-1, 1].

PaliGemma resizes to res x res (no aspect preservation) and feeds `x / 127.5 - 1`.
big_vision resizes bilinear with antialiasing in float (`tf.image.resize`); HF's
processor resizes bicubic on uint8 with PIL. Both are reproduced here: "bilinear"
resizes each channel in float32 (PIL's triangle filter widens on downscale, which
is what antialias=True does; max deviation from TF ~1e-5 after scaling), "bicubic"
and "nearest" resize the uint8 image as HF does. numpy + pillow only: this runs
on device. PIL global state (`Image.MAX_IMAGE_PIXELS`, `LOAD_TRUNCATED_IMAGES`) is
never changed.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pg2edge.errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit
# name -> (PIL filter, resize in float32?). Float keeps big_vision's precision; uint8 matches HF.
RESIZE_FILTERS: dict[str, tuple[Image.Resampling, bool]] = {
    "bilinear": (Image.Resampling.BILINEAR, True),
    "bicubic": (Image.Resampling.BICUBIC, False),
    "nearest": (Image.Resampling.NEAREST, False),
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
# What PIL raises for unreadable or truncated data (plugins differ).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def load_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `src` fully into an upright RGB image, refusing bombs and truncated files.

    `src` is a path, encoded bytes or a PIL image (never modified). Alpha is dropped,
    not composited (as big_vision's `decode_image(channels=3)` and PIL's `convert("RGB")`).
    The pixel count is checked from the header before any decoding; PIL's own
    `DecompressionBombWarning` is an error too, so a `max_pixels` above PIL's
    `MAX_IMAGE_PIXELS` does not raise the limit.
    """
    name = _source_name(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if isinstance(src, Image.Image):
                return _decode(src, name, max_pixels)
            with _open(src, name) as im:
                return _decode(im, name, max_pixels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"{name}: refused as a possible decompression bomb: {e}") from None


def original_size(src: ImageSource) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header: maps boxes back to pixels."""
    name = _source_name(src)
    if isinstance(src, Image.Image):
        return _upright_size(src, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # size only, nothing decoded
        try:
            with _open(src, name) as im:
                return _upright_size(im, name)
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: refused as a possible decompression bomb: {e}") from None


def preprocess(image: ImageSource, resolution: int, resize_filter: str = "bilinear") -> np.ndarray:
    """float32 [resolution, resolution, 3] in [-1, 1]: PaliGemma's `x / 127.5 - 1` after resizing."""
    resample, in_float = _filter(resize_filter)
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution <= 0:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    rgb = load_image(image)
    size = (int(resolution), int(resolution))
    if rgb.size == size:  # every filter returns an image of the target size unchanged: nothing to resample
        pixels = np.asarray(rgb, dtype=np.float32)
    elif in_float:
        bands = [band.convert("F").resize(size, resample=resample) for band in rgb.split()]
        pixels = np.stack([np.asarray(b, dtype=np.float32) for b in bands], axis=-1)
    else:
        pixels = np.asarray(rgb.resize(size, resample=resample), dtype=np.float32)
    return scale_pixels(pixels)


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] from 0..255 values (uint8 or float): PaliGemma's `x / 127.5 - 1`, one definition."""
    scaled = np.asarray(pixels, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def preprocess_batch(images: Sequence[ImageSource], resolution: int,
                     resize_filter: str = "bilinear") -> np.ndarray:
    """float32 [B, resolution, resolution, 3]: `preprocess` applied to each image."""
    _filter(resize_filter)
    if len(images) == 0:
        return np.zeros((0, resolution, resolution, 3), np.float32)
    return np.stack([preprocess(im, resolution, resize_filter) for im in images])


# --- helpers ---------------------------------------------------------------------------------------

def _filter(resize_filter: str) -> tuple[Image.Resampling, bool]:
    """Look up a filter name, naming the allowed ones on a typo."""
    try:
        return RESIZE_FILTERS[resize_filter]
    except (KeyError, TypeError):
        raise ValueError(f"unknown resize_filter {resize_filter!r}: expected one of "
                         f"{', '.join(RESIZE_FILTERS)}") from None


def _source_name(src: ImageSource) -> str:
    """How error messages refer to `src`."""
    if isinstance(src, Image.Image):
        filename = getattr(src, "filename", "")
        return filename or f"<{src.mode} image {src.width}x{src.height}>"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    raise TypeError(f"expected a path, bytes or PIL.Image.Image, got {type(src).__name__}")


def _open(src: str | os.PathLike | bytes, name: str) -> Image.Image:
    """Read only the header (PIL opens lazily); errors become ImageError naming `name`."""
    fp = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
    try:
        return Image.open(fp)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognized image format") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: cannot read image ({e})") from None


def _decode(im: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Size check, full decode (so truncation surfaces here), orientation, RGB."""
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of "
                         f"{max_pixels} (possible decompression bomb)")
    try:
        im.load()
        upright = ImageOps.exif_transpose(im)  # always a new image
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: cannot decode image, truncated or corrupt ({e})") from None
    return _to_rgb(upright, name)


def _upright_size(im: Image.Image, name: str) -> tuple[int, int]:
    """Header size with width/height swapped for 90-degree EXIF orientations."""
    if im.format == "PNG" and "exif" not in im.info:
        return im.size  # PIL would decode all pixels to look for an eXIf chunk after the image data
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: cannot read EXIF ({e})") from None
    width, height = im.size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; high-bit-depth modes are scaled, not clipped."""
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        gray = _high_depth_to_uint8(np.asarray(im), im.mode)
        return Image.fromarray(gray).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # resolves palette transparency without PIL's warning
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ImageError(f"{name}: cannot convert image mode {im.mode} to RGB ({e})") from None


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit -> `>> 8`; mode I within [0, 65535] is 16-bit data; F in [0, 1] x255; else min-max."""
    if mode in _SIXTEEN_BIT_MODES:
        return (arr.astype(np.uint16) >> 8).astype(np.uint8)
    values = np.nan_to_num(arr.astype(np.float64))
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "I" and lo >= 0 and hi <= 65535:
        return (values.astype(np.uint32) >> 8).astype(np.uint8)
    if mode == "F" and lo >= 0 and hi <= 1:
        return np.round(values * 255).astype(np.uint8)
    if hi == lo:
        return np.full(values.shape, np.clip(round(lo), 0, 255), np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
