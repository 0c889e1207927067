"""OCR images: 1-2 short words or numbers in big, clear glyphs, one per line, readable at patch 14."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pg2edge.tasks.vocab import COLORS, OCR_WORDS

MAX_LINES = 2
MAX_NUMBER = 999
_SIZE_FRACTION = 0.24  # starting glyph height as a fraction of the image side; shrunk until the text fits
_FILL_FRACTION = 0.9
_MIN_CONTRAST = 90  # luminance difference between text and background


@dataclass(frozen=True)
class TextSpec:
    """What an OCR image says: its lines, top to bottom (the target joins them with spaces)."""

    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def sample_text(rng: np.random.Generator) -> TextSpec:
    """1-2 tokens, each a vocabulary word (60%) or a number 0-999 (40%)."""
    count = int(rng.integers(1, MAX_LINES + 1))
    lines = []
    for _ in range(count):
        if rng.random() < 0.6:
            lines.append(OCR_WORDS[int(rng.integers(len(OCR_WORDS)))])
        else:
            lines.append(str(int(rng.integers(0, MAX_NUMBER + 1))))
    return TextSpec(tuple(lines))


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (FreeType), or its bitmap font where FreeType is missing."""
    return ImageFont.load_default(size=size)


def _luminance(rgb: np.ndarray | tuple[int, int, int]) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def text_color(rng: np.random.Generator, bg_rgb: np.ndarray) -> tuple[int, int, int]:
    """A shape colour that stands out from the background's mean colour."""
    bg = _luminance(bg_rgb)
    choices = [c for c in COLORS.values() if abs(_luminance(c) - bg) >= _MIN_CONTRAST]
    choices = choices or [max(COLORS.values(), key=lambda c: abs(_luminance(c) - bg))]
    return choices[int(rng.integers(len(choices)))]


def _fit(lines: tuple[str, ...], res: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, list[tuple]]:
    """The largest font (<= the start size) whose lines fit 90% of the image, and each line's bbox."""
    size = max(8, int(_SIZE_FRACTION * res))
    while True:
        font = _font(size)
        boxes = [font.getbbox(line) for line in lines]
        width = max(b[2] - b[0] for b in boxes)
        height = sum(b[3] - b[1] for b in boxes) * 1.25
        if (width <= _FILL_FRACTION * res and height <= _FILL_FRACTION * res) or size <= 8:
            return font, boxes
        size -= 2


def _draw_small_font(spec: TextSpec, canvas: Image.Image, rgb: tuple[int, int, int]) -> None:
    """Fallback without FreeType: the 11 px bitmap font drawn small, then scaled up (nearest) and stamped."""
    font = _font(11)
    lines = spec.lines
    w = max(int(font.getlength(line)) for line in lines) + 2
    stamp = Image.new("L", (w, 13 * len(lines) + 2), 0)
    for i, line in enumerate(lines):
        ImageDraw.Draw(stamp).text((1, 1 + 13 * i), line, fill=255, font=font)
    scale = max(1, int(_FILL_FRACTION * canvas.width) // max(stamp.width, stamp.height))
    stamp = stamp.resize((stamp.width * scale, stamp.height * scale), Image.Resampling.NEAREST)
    at = ((canvas.width - stamp.width) // 2, (canvas.height - stamp.height) // 2)
    canvas.paste(rgb, (*at, at[0] + stamp.width, at[1] + stamp.height), stamp)


def draw_text(canvas_rgb: np.ndarray, spec: TextSpec, rng: np.random.Generator) -> np.ndarray:
    """The background with the lines drawn on it, centred as a block at a small random offset: uint8 [R, R, 3]."""
    res = canvas_rgb.shape[0]
    canvas = Image.fromarray(canvas_rgb)
    rgb = text_color(rng, canvas_rgb.reshape(-1, 3).mean(axis=0))
    if not isinstance(_font(12), ImageFont.FreeTypeFont):
        _draw_small_font(spec, canvas, rgb)
        return np.asarray(canvas)
    font, boxes = _fit(spec.lines, res)
    line_h = [b[3] - b[1] for b in boxes]
    gap = int(0.25 * max(line_h))
    block_w = max(b[2] - b[0] for b in boxes)
    block_h = sum(line_h) + gap * (len(boxes) - 1)
    jitter_x, jitter_y = max(res - block_w, 0) // 4, max(res - block_h, 0) // 4
    x0 = (res - block_w) // 2 + int(rng.integers(-jitter_x, jitter_x + 1))
    y = (res - block_h) // 2 + int(rng.integers(-jitter_y, jitter_y + 1))
    draw = ImageDraw.Draw(canvas)
    for line, box, h in zip(spec.lines, boxes, line_h):
        x = x0 + (block_w - (box[2] - box[0])) // 2  # centre each line in the block
        draw.text((x - box[0], y - box[1]), line, fill=rgb, font=font)
        y += h + gap
    return np.asarray(canvas)
