"""The layout grid that shapes and text snap to, so each object shows the same pixels wherever it sits.

At 112 px one cell is one 14 px patch of the mini model (at 224 px, 2 x 2 patches).
A ViT trained from scratch for minutes does not learn to recognise a shape or a glyph
under sub-patch shifts: on free placement the mini tower's shape accuracy stays at
chance after 51,200 examples, on this grid it reaches 0.84 (benchmarks/vision_probe.py).
"""

from __future__ import annotations

LAYOUT_GRID = 8  # cells per image side
# "grid": objects snap to cells (the default); "free": shapes anywhere, text shifted by a random
# fraction of a cell, for models whose tower can learn sub-patch shifts (a pretrained one).
LAYOUTS = ("grid", "free")


def cell_size(res: int) -> float:
    """Side of one layout cell in pixels."""
    return res / LAYOUT_GRID


def cell_centres(res: int, radius: float, margin: float) -> list[float]:
    """Centres (pixels, one axis) of the cells where an object of this radius stays `margin` inside the image."""
    cell = cell_size(res)
    centres = ((i + 0.5) * cell for i in range(LAYOUT_GRID))
    return [c for c in centres if margin + radius <= c <= res - margin - radius]
