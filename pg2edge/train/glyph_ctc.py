"""A glyph term for the tower stage: CTC over the image tokens in reading order against an OCR line's text.

An `ocr` line says what an image's text reads, not where each glyph is, so the
word bag teaches the tower only which words an image contains. Read in raster
order, the patch tokens of a text image pass its glyphs in the text's own order
(left to right, then the next line down), which is what connectionist temporal
classification needs: each token emits two frames through one learned map
(two, so a doubled letter can sit in adjacent cells), and CTC sums over every
alignment of the characters to those frames. The token under each glyph then
says which character it shows. The map is no part of the model: the stage keeps
it beside the tower only so that the tower's own reading (`greedy_read`) can be
scored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

FRAMES_PER_TOKEN = 2
BLANK = 0  # class 0; character k of the charset is class k + 1
HEAD_FILE = "glyph_head.npz"  # the map and its charset, beside a tower stage's model


@dataclass(frozen=True, eq=False)
class GlyphLabels:
    """Each image's text as CTC labels: right-padded class ids and a flag for images that have text."""

    charset: str  # character k is class k + 1
    labels: np.ndarray  # int32 [N, L]
    paddings: np.ndarray  # float32 [N, L]: 1 past the end of the text
    has_text: np.ndarray  # float32 [N]: 1 where the image has an OCR line

    @property
    def classes(self) -> int:
        return len(self.charset) + 1


def glyph_labels(texts: Sequence[str | None]) -> GlyphLabels:
    """CTC labels of each image's text (None: no text), over the characters that occur in any of them."""
    charset = "".join(sorted({ch for text in texts if text for ch in text}))
    index = {ch: k + 1 for k, ch in enumerate(charset)}
    longest = max((len(t) for t in texts if t), default=1)
    labels = np.zeros((len(texts), longest), np.int32)
    paddings = np.ones((len(texts), longest), np.float32)
    for i, text in enumerate(texts):
        if text:
            labels[i, :len(text)] = [index[ch] for ch in text]
            paddings[i, :len(text)] = 0.0
    has_text = np.array([1.0 if t else 0.0 for t in texts], np.float32)
    return GlyphLabels(charset, labels, paddings, has_text)


def glyph_head(key: jax.Array, width: int, classes: int) -> jax.Array:
    """One [width, FRAMES_PER_TOKEN * classes] map from a token to its frames' class logits."""
    return jax.random.normal(key, (width, FRAMES_PER_TOKEN * classes)) / math.sqrt(width)


def glyph_frames(tokens: jax.Array, head: jax.Array) -> jax.Array:
    """[B, T * FRAMES_PER_TOKEN, classes] logits: each token's frames, tokens in raster order."""
    batch, count, _ = tokens.shape
    return jnp.einsum("btd,dk->btk", tokens, head).reshape(batch, count * FRAMES_PER_TOKEN, -1)


def greedy_read(frames: np.ndarray, charset: str) -> list[str]:
    """Best-path CTC decoding of [B, F, classes] frame logits: each frame's top class, repeats merged, blanks
    dropped."""
    return ["".join(charset[k - 1] for k, _ in itertools.groupby(row.tolist()) if k != BLANK)
            for row in np.asarray(frames).argmax(-1)]


def write_head(directory: Path, head: jax.Array, charset: str) -> None:
    """Keep the map and its charset (as code points) in `directory`/HEAD_FILE."""
    np.savez(directory / HEAD_FILE, head=np.asarray(head, np.float32),
             charset=np.array([ord(ch) for ch in charset], np.int32))


def read_head(directory: Path) -> tuple[np.ndarray, str]:
    """(map [D, FRAMES_PER_TOKEN * classes], charset) that a tower stage kept in `directory`."""
    with np.load(directory / HEAD_FILE, allow_pickle=False) as f:
        if not {"head", "charset"} <= set(f.files):
            raise ValueError(f"{directory / HEAD_FILE}: expected arrays 'head' and 'charset', found {sorted(f.files)}")
        head, codes = f["head"], f["charset"]
    if head.ndim != 2 or head.shape[1] != FRAMES_PER_TOKEN * (len(codes) + 1):
        raise ValueError(f"{directory / HEAD_FILE}: head {head.shape} does not fit a charset of {len(codes)} "
                         f"characters (expected [D, {FRAMES_PER_TOKEN * (len(codes) + 1)}])")
    return head, "".join(map(chr, codes))


def glyph_loss(tokens: jax.Array, head: jax.Array, labels: jax.Array, paddings: jax.Array,
               has_text: jax.Array) -> jax.Array:
    """CTC negative log-likelihood per character of each text image's labels, given the frames its tokens
    emit in raster order; 0 when the batch has no text image."""
    frames = glyph_frames(tokens, head)
    per_image = optax.ctc_loss(frames, jnp.zeros(frames.shape[:2]), labels, paddings, blank_id=BLANK)
    chars = jnp.sum(1.0 - paddings, axis=-1)
    return jnp.sum(per_image * has_text) / jnp.maximum(jnp.sum(chars * has_text), 1.0)
