"""One suite image from (seed, index): its PNG bytes and its targets, independent of every other image."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pg2edge.tasks.ocr import TextSpec, draw_text, sample_text
from pg2edge.tasks.render import DrawnShape, background, draw_shapes
from pg2edge.tasks.scene import sample_shapes
from pg2edge.tasks.targets import Target, shape_targets, text_targets

TEXT_FRACTION = 0.25  # share of images that are OCR images (the rest show shapes)
PNG_COMPRESS_LEVEL = 3  # fixed, with no metadata chunks, so the same pixels give the same bytes


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    """An image's pixels and PNG bytes, what it shows (shapes or text), and its examples' texts."""

    index: int
    pixels: np.ndarray  # uint8 [R, R, 3]
    png: bytes
    content: tuple[DrawnShape, ...] | TextSpec
    targets: tuple[Target, ...]

    @property
    def simple(self) -> bool:
        """One shape or one line of text: every task's answer then follows from a single object."""
        if isinstance(self.content, TextSpec):
            return len(self.content.lines) == 1
        return len(self.content) == 1


def image_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Image `index`'s own streams (content, pixel noise): images do not depend on N, order or each other.

    Content draws do not depend on the resolution, so one seed shows the same scenes and
    texts at 112 and 224 px (up to pixel rounding).
    """
    return np.random.default_rng([seed, index, 0]), np.random.default_rng([seed, index, 1])


def encode_png(pixels: np.ndarray) -> bytes:
    """Deterministic PNG bytes: fixed compression, no timestamps or text chunks."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def generate_image(seed: int, index: int, res: int, layout: str = "grid") -> GeneratedImage:
    """Image `index` of the suite with this seed at res x res (layout: see tasks.layout.LAYOUTS)."""
    rng, noise_rng = image_rngs(seed, index)
    canvas = background(rng, res, noise_rng)
    if rng.random() < TEXT_FRACTION:
        spec = sample_text(rng)
        pixels = draw_text(canvas, spec, rng, layout)
        content: tuple[DrawnShape, ...] | TextSpec = spec
        targets = text_targets(spec)
    else:
        content = draw_shapes(canvas, sample_shapes(rng, res, layout))
        pixels = canvas
        targets = shape_targets(content, rng)
    return GeneratedImage(index, pixels, encode_png(pixels), content, targets)
