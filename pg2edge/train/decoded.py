"""Training images decoded once: the RGB bytes of each image already at the model's size, kept in memory.

A run reads every image many times (a suite image carries up to six lines, and a
run makes several epochs), and on a two-core host the loader thread that decodes
the next batch competes with the train step for the cores. Keeping the decoded
bytes makes a later read a copy: a suite batch of 32 loads in 4-5 ms instead of
17. A run also decodes the images it is about to read up front (`warm`), while its
first step compiles, so no later step shares the cores with PNG decoding. Only
images that need no resampling are kept, so a read returns exactly
`preprocess`'s output, and only up to a byte budget (the suite's 12,800 training
images at 112 px take 482 MB). One loader thread uses an instance; nothing here
is shared between runs.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pg2edge.preprocess import load_image, preprocess, scale_pixels

DEFAULT_BUDGET = 1 << 30  # bytes of decoded RGB kept per run
WARM_WORKERS = 2  # threads `warm` decodes on in a run (beside the first step's compile: one core, then both)
WARM_CHUNK = 256  # images `warm` hands its threads at a time (it stops at the first chunk with a miss)


class DecodedImages:
    """`preprocess(path, resolution, resize_filter)` for a run's image files, each file decoded once."""

    def __init__(self, resolution: int, resize_filter: str = "bilinear", budget_bytes: int = DEFAULT_BUDGET) -> None:
        self.resolution, self.resize_filter = resolution, resize_filter
        self._rgb: dict[str, np.ndarray] = {}
        self._left = budget_bytes

    def __len__(self) -> int:
        return len(self._rgb)

    def pixels(self, path: str | os.PathLike) -> np.ndarray:
        """float32 [R, R, 3] in [-1, 1], equal to `preprocess`'s."""
        key = os.fspath(path)
        rgb = self._rgb.get(key)
        if rgb is None:
            image = load_image(key)
            if image.size != (self.resolution, self.resolution):  # resampled on every read, never kept
                return preprocess(image, self.resolution, self.resize_filter)
            rgb = np.asarray(image)
            self._keep(key, rgb)
        return scale_pixels(rgb)

    def warm(self, paths: Iterable[str | os.PathLike], workers: int = 1) -> int:
        """Decode `paths` in order now, on `workers` threads (Pillow decodes without the GIL), until the budget
        is spent or an image needs resampling (such images are never kept, so decoding them ahead gains nothing);
        the number of images kept. `paths` is read lazily, no further than that."""
        fresh = (key for key in map(os.fspath, paths) if key not in self._rgb)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pg2edge-decode") as pool:
            while chunk := list(dict.fromkeys(itertools.islice(fresh, WARM_CHUNK))):
                for key, rgb in zip(chunk, pool.map(self._at_size, chunk)):
                    if rgb is None or not self._keep(key, rgb):
                        return len(self._rgb)
        return len(self._rgb)

    def _at_size(self, key: str) -> np.ndarray | None:
        """The image's RGB bytes if it is already at the model's size, else None."""
        image = load_image(key)
        return np.asarray(image) if image.size == (self.resolution, self.resolution) else None

    def _keep(self, key: str, rgb: np.ndarray) -> bool:
        """Keep `rgb` if the budget allows; whether it did."""
        if rgb.nbytes > self._left:
            return False
        self._rgb[key] = rgb
        self._left -= rgb.nbytes
        return True

    def batch(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """float32 [B, R, R, 3]: `pixels` of each path."""
        return np.stack([self.pixels(p) for p in paths])
