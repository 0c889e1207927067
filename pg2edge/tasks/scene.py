"""Random, non-overlapping shape layouts on the layout grid: what an image shows, decided before any pixel is drawn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pg2edge.tasks.layout import cell_centres
from pg2edge.tasks.vocab import COLORS, SHAPES, SIZES

MAX_SHAPES = 4
# Radius (half the bounding square) as a fraction of the image side; the gap keeps "small" and "big" apart.
RADIUS_RANGE = {"small": (0.055, 0.075), "big": (0.12, 0.16)}
MIN_RADIUS_PX = 3.0
_TRIES = 60


@dataclass(frozen=True)
class ShapeSpec:
    """One shape to draw: what it is and where (pixel centre of its bounding square, radius)."""

    shape: str
    color: str
    size: str
    cx: float
    cy: float
    radius: float

    @property
    def label(self) -> str:
        """The "color shape" detection label."""
        return f"{self.color} {self.shape}"


def _fits(cx: float, cy: float, r: float, placed: list[ShapeSpec], gap: float) -> bool:
    """Bounding squares (plus a gap) must not overlap, so every shape is whole and countable."""
    return all(abs(cx - p.cx) >= r + p.radius + gap or abs(cy - p.cy) >= r + p.radius + gap for p in placed)


def sample_shapes(rng: np.random.Generator, res: int, layout: str = "grid") -> tuple[ShapeSpec, ...]:
    """1-4 shapes (centred on layout cells unless `layout` is free) in a res x res image, left to right
    (ties: top to bottom)."""
    wanted = int(rng.integers(1, MAX_SHAPES + 1))
    margin = max(2.0, 0.02 * res)
    placed: list[ShapeSpec] = []
    for _ in range(wanted):
        size = SIZES[int(rng.integers(len(SIZES)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        lo, hi = RADIUS_RANGE[size]
        r = max(MIN_RADIUS_PX, float(rng.uniform(lo, hi)) * res)
        centres = cell_centres(res, r, margin) if layout == "grid" else []
        for _ in range(_TRIES):  # rejection sampling; a shape that never fits is dropped
            if layout == "free":
                cx, cy = (float(v) for v in rng.uniform(margin + r, res - margin - r, size=2))
            else:
                cx, cy = (centres[int(i)] for i in rng.integers(len(centres), size=2))
            if _fits(cx, cy, r, placed, margin):
                placed.append(ShapeSpec(shape, color, size, round(cx, 3), round(cy, 3), round(r, 3)))
                break
    return tuple(sorted(placed, key=lambda s: (s.cx, s.cy)))
