"""Shape outlines and their rasterized masks, so drawing, boxes and seg codes share one pixel set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pg2edge.tasks.vocab import SHAPES

Point = tuple[float, float]


@dataclass(frozen=True, eq=False)
class Raster:
    """A shape's filled pixels: bool mask [h, w] whose top-left pixel sits at (top, left) in the image."""

    mask: np.ndarray
    top: int
    left: int


def _regular(n: int, radius: float, start_deg: float, cx: float, cy: float) -> list[Point]:
    step = 2 * math.pi / n
    start = math.radians(start_deg)
    return [(cx + radius * math.cos(start + k * step), cy + radius * math.sin(start + k * step)) for k in range(n)]


def _star(radius: float, cx: float, cy: float) -> list[Point]:
    outer = _regular(5, radius, -90, cx, cy)
    inner = _regular(5, 0.45 * radius, -54, cx, cy)
    return [p for pair in zip(outer, inner) for p in pair]


def outline(shape: str, cx: float, cy: float, radius: float) -> list[Point]:
    """Polygon vertices of a non-circle shape centred (by its bounding box) at (cx, cy)."""
    if shape == "square":
        h = 0.8 * radius
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # circumradius r spans y in [-r, r/2]: shift down by r/4 to centre it
        return _regular(3, radius, -90, cx, cy + 0.25 * radius)
    if shape == "star":  # spans y in [-r, r cos 36deg]
        return _star(radius, cx, cy + 0.5 * radius * (1 - math.cos(math.radians(36))))
    if shape == "hexagon":
        return _regular(6, radius, 0, cx, cy)
    if shape == "diamond":  # narrower than tall, so it never reads as a rotated square
        w = 0.7 * radius
        return [(cx, cy - radius), (cx + w, cy), (cx, cy + radius), (cx - w, cy)]
    raise ValueError(f"shape {shape!r}: expected one of {', '.join(SHAPES)}")


def rasterize(shape: str, cx: float, cy: float, radius: float) -> Raster:
    """Fill the shape on a small canvas around it (not the whole image), as PIL draws it."""
    left, top = math.floor(cx - radius) - 1, math.floor(cy - radius) - 1
    side = math.ceil(2 * radius) + 3
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    lx, ly = cx - left, cy - top
    if shape == "circle":
        draw.ellipse((lx - radius, ly - radius, lx + radius, ly + radius), fill=255)
    else:
        draw.polygon(outline(shape, lx, ly, radius), fill=255)
    return Raster(np.asarray(canvas) > 0, top, left)


def tight_box(raster: Raster) -> tuple[int, int, int, int]:
    """Pixel box (top, left, bottom, right), exclusive ends, of the filled pixels."""
    rows = np.flatnonzero(raster.mask.any(axis=1))
    cols = np.flatnonzero(raster.mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty shape raster: radius too small to draw")
    return (raster.top + int(rows[0]), raster.left + int(cols[0]),
            raster.top + int(rows[-1]) + 1, raster.left + int(cols[-1]) + 1)
