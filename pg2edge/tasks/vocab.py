"""The suite's closed vocabulary: shape and colour names, their RGB values, and every word a target uses.

Every word here is a whole piece of `build_synthetic_tokenizer`'s built-in list, so a
target costs one token per word; `SUITE_WORDS` is passed as `extra_words` anyway so a
change to the built-in list can never split a suite word into characters.
"""

from __future__ import annotations

from types import MappingProxyType

RGB = tuple[int, int, int]

# Shape colours: pairwise >= 80 apart in RGB, and >= 100 from every background below.
COLORS: MappingProxyType[str, RGB] = MappingProxyType({
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (35, 75, 225),
    "yellow": (245, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 50, 190),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
})

# Background base colours (gray, tan, sky, brown, mint): none is a shape colour.
BACKGROUNDS: tuple[RGB, ...] = ((125, 125, 125), (190, 165, 125), (140, 190, 230), (110, 70, 50), (160, 220, 190))

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")
SIZES: tuple[str, ...] = ("small", "big")

# Words an OCR image may show (besides numbers): short, so 1-2 of them fit across a 112 px image.
OCR_WORDS: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "orange", "purple", "white", "black", "pink", "brown", "cyan", "gray",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "yes", "no", "big", "small", "top", "left", "right", "star", "text", "word", "photo", "light", "dark",
)

# Prompt/answer words; digits ("0".."9") are single characters in every vocabulary and need no entry.
TASK_WORDS: tuple[str, ...] = ("caption", "en", "answer", "how", "many", "are", "there", "what", "color", "is",
                               "the", "shapes", "a", "and", "ocr", "detect", "segment")


def _suite_words() -> tuple[str, ...]:
    """Every word any prefix or suffix can contain, deduplicated in first-seen order."""
    words = [*TASK_WORDS, *COLORS, *SHAPES, *SIZES, *OCR_WORDS]
    return tuple(dict.fromkeys(words))


SUITE_WORDS: tuple[str, ...] = _suite_words()
