"""Synthetic task suite: images and prefix -> suffix targets the tiny PaliGemma trains and is evaluated on.

No dataset can be downloaded, so pg2edge draws its own: coloured shapes (caption,
counting and colour questions, detection, segmentation) and rendered words/numbers
(OCR), with targets in PaliGemma's formats. numpy + pillow only.
"""

from pg2edge.tasks.errors import DataError
from pg2edge.tasks.generate import GeneratedImage, generate_image
from pg2edge.tasks.jsonl import Example, ReadResult, read_examples
from pg2edge.tasks.segcodes import decode_codes, encode_mask
from pg2edge.tasks.suite import (GENERATOR_VERSION, SPLITS, TOKENIZER_VOCAB, SuiteConfig, SuiteSummary, is_current,
                                 split_indices, write_suite)
from pg2edge.tasks.targets import TASKS, Target
from pg2edge.tasks.vocab import COLORS, SHAPES, SIZES, SUITE_WORDS

__all__ = [
    "COLORS", "DataError", "Example", "GENERATOR_VERSION", "GeneratedImage", "ReadResult", "SHAPES", "SIZES",
    "SPLITS", "SUITE_WORDS", "SuiteConfig", "SuiteSummary", "TASKS", "TOKENIZER_VOCAB", "Target", "decode_codes",
    "encode_mask", "generate_image", "is_current", "read_examples", "split_indices", "write_suite",
]
