"""OCR images: 1-2 short words or numbers, one glyph per layout cell, one per line, readable at patch 14."""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pg2edge.tasks.layout import LAYOUT_GRID, cell_size
from pg2edge.tasks.vocab import COLORS, OCR_WORDS

MAX_LINES = 2
MAX_NUMBER = 999
_GLYPHS = string.ascii_lowercase + string.digits  # every character sample_text can draw
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


def _widest_glyph(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    """Ink width in pixels of the widest character the suite draws."""
    return max(right - left for left, _, right, _ in (font.getbbox(ch) for ch in _GLYPHS))


@functools.lru_cache(maxsize=16)
def _glyph_size(cell: int) -> int:
    """The largest font size (at most two cells, at least 8 px) at which every suite glyph fits one cell's width."""
    size = 2 * cell
    while size > 8 and _widest_glyph(_font(size)) > cell:
        size -= 1
    return size


@functools.lru_cache(maxsize=512)
def _glyph(ch: str, cell: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """Coverage mask (mode L) of one character centred in a slot one cell wide and two cells tall."""
    slot = Image.new("L", (cell, 2 * cell), 0)
    if isinstance(font, ImageFont.FreeTypeFont):
        ImageDraw.Draw(slot).text((cell / 2, 1.7 * cell), ch, fill=255, font=font, anchor="ms")
        return slot
    # No FreeType: the 6 x 11 px bitmap glyph, scaled up (nearest) and centred in the slot.
    stamp = Image.new("L", (6, 11), 0)
    ImageDraw.Draw(stamp).text((0, 0), ch, fill=255, font=font)
    scale = max(1, min(cell // 6, 2 * cell // 11))
    stamp = stamp.resize((6 * scale, 11 * scale), Image.Resampling.NEAREST)
    slot.paste(stamp, ((cell - stamp.width) // 2, (2 * cell - stamp.height) // 2))
    return slot


def draw_text(canvas_rgb: np.ndarray, spec: TextSpec, rng: np.random.Generator, layout: str = "grid") -> np.ndarray:
    """The background with each line's characters drawn one per layout cell: uint8 [R, R, 3].

    A line is two cells tall, with an empty cell row between lines; the block's row and
    each line's first column are random whole cells, so on the grid a glyph always shows the
    same pixels. The free layout shifts the whole block by a random fraction of a cell.
    """
    res = canvas_rgb.shape[0]
    canvas = Image.fromarray(canvas_rgb)
    rgb = text_color(rng, canvas_rgb.reshape(-1, 3).mean(axis=0))
    cell = cell_size(res)
    font = _font(_glyph_size(int(cell)))
    free = int(layout == "free")  # a shifted block needs one spare cell on each axis
    shift_x, shift_y = (float(v) * cell for v in rng.random(2)) if free else (0.0, 0.0)
    rows = 3 * len(spec.lines) - 1
    row0 = int(rng.integers(0, LAYOUT_GRID - rows - free + 1))
    for i, line in enumerate(spec.lines):
        if len(line) > LAYOUT_GRID - free:
            raise ValueError(f"OCR line {line!r} has {len(line)} characters: at most {LAYOUT_GRID - free} fit "
                             f"the {layout} layout")
        col0 = int(rng.integers(0, LAYOUT_GRID - len(line) - free + 1))
        for k, ch in enumerate(line):
            mask = _glyph(ch, int(cell), font)
            x, y = round((col0 + k) * cell + shift_x), round((row0 + 3 * i) * cell + shift_y)
            canvas.paste(rgb, (x, y, x + mask.width, y + mask.height), mask)
    return np.asarray(canvas)
