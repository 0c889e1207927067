"""SentencePiece tokenizer with PaliGemma's special tokens and prompt layout.

PaliGemma's vocabulary is Gemma's 256000 pieces (pad 0, eos 1, bos 2, "\\n" 108)
followed by 1024 `<locNNNN>` and 128 `<segNNN>` pieces that encode boxes and
masks. `Tokenizer` refuses any model that lacks this layout, because a shifted
id silently turns detections into garbage. The real `paligemma_tokenizer.model`
cannot be downloaded here, so `build_synthetic_tokenizer` synthesizes a model
with the same layout for tests, the tiny demo model and its synthetic tasks.

Runtime imports only sentencepiece; building a model also needs protobuf.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sentencepiece as spm

from pg2edge.config import BOS_ID, EOS_ID, NEWLINE_ID, NUM_LOC_TOKENS, NUM_SEG_TOKENS, PAD_ID, TextConfig
from pg2edge.errors import TokenizerError

NUM_SPECIAL_TAIL = NUM_LOC_TOKENS + NUM_SEG_TOKENS
UNK_ID = 3
SPECIAL_PIECES = {PAD_ID: "<pad>", EOS_ID: "<eos>", BOS_ID: "<bos>", UNK_ID: "<unk>", NEWLINE_ID: "\n"}


def loc_piece(i: int) -> str:
    """Text of the i-th location token (`<loc0042>`), as the model emits it."""
    return f"<loc{i:04d}>"


def seg_piece(i: int) -> str:
    """Text of the i-th segmentation token (`<seg042>`), as the model emits it."""
    return f"<seg{i:03d}>"


@dataclass(frozen=True, eq=False)
class Prompt:
    """Token ids plus big_vision's prefix-LM masks for one example (image tokens excluded)."""

    tokens: np.ndarray  # int32 [T]
    mask_ar: np.ndarray  # int32 [T]: 0 = prefix (full attention), 1 = suffix (causal)
    mask_loss: np.ndarray  # int32 [T]: 1 where the loss is taken (suffix incl. eos)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prefix_len(self) -> int:
        """Number of prefix tokens (bos + prefix + "\\n"): the prefill length after the image."""
        return int(np.sum(self.mask_ar == 0))


class Tokenizer:
    """A validated PaliGemma SentencePiece model: encode, decode and prompt building."""

    def __init__(self, model_proto: bytes, name: str = "<bytes>") -> None:
        self._proto = bytes(model_proto)
        self._name = name
        self._sp = _load_processor(self._proto, name)
        _validate_layout(self._sp, name)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load `tokenizer.model` from disk; errors name the file."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise TokenizerError(f"{name}: tokenizer model not found") from None
        except OSError as e:
            raise TokenizerError(f"{name}: cannot read tokenizer model: {e.strerror or e}") from None
        return cls(data, name=name)

    @classmethod
    def from_bytes(cls, model_proto: bytes, name: str = "<bytes>") -> "Tokenizer":
        """Load a serialized ModelProto (e.g. from a bundle or `build_synthetic_tokenizer`)."""
        return cls(model_proto, name=name)

    def __reduce__(self) -> tuple[type, tuple[bytes, str]]:  # picklable for data-loader workers
        return (Tokenizer, (self._proto, self._name))

    def __repr__(self) -> str:
        return f"Tokenizer({self._name!r}, vocab_size={self.vocab_size})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def loc_start(self) -> int:
        return self.vocab_size - NUM_SPECIAL_TAIL

    @property
    def seg_start(self) -> int:
        return self.vocab_size - NUM_SEG_TOKENS

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def newline_id(self) -> int:
        return NEWLINE_ID

    def serialized(self) -> bytes:
        """The model proto exactly as loaded, so a bundle can copy it byte for byte."""
        return self._proto

    def check_config(self, text: TextConfig) -> None:
        """Refuse to pair this tokenizer with a decoder of a different vocabulary."""
        if text.vocab_size != self.vocab_size:
            raise TokenizerError(f"{self._name}: vocab_size {self.vocab_size} does not match the model "
                                 f"config's vocab_size {text.vocab_size}")

    def encode(self, text: str) -> list[int]:
        """Piece ids of `text`, without bos/eos; `<locNNNN>`/`<segNNN>` map to single ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of `ids`: pad/bos/eos are skipped (nothing stops early), loc/seg become their text."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim > 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {arr.shape}")
        id_list = [int(i) for i in arr.reshape(-1)]
        for i in id_list:
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"{self._name}: id {i} is outside the vocabulary [0, {self.vocab_size})")
        return self._sp.decode(id_list)

    def id_to_piece(self, i: int) -> str:
        """The raw piece string of one id (for debugging and manifests)."""
        if not 0 <= int(i) < self.vocab_size:
            raise TokenizerError(f"{self._name}: id {i} is outside the vocabulary [0, {self.vocab_size})")
        return self._sp.id_to_piece(int(i))

    def encode_prompt(self, prefix: str, suffix: str | None = None) -> Prompt:
        """PaliGemma layout `[bos] prefix "\\n" [suffix eos]` with big_vision's masks.

        `suffix=""` still appends eos (a target that ends at once); `None` means no target.
        """
        prefix_ids = [BOS_ID, *self.encode(prefix), NEWLINE_ID]
        suffix_ids = [] if suffix is None else [*self.encode(suffix), EOS_ID]
        tokens = np.asarray(prefix_ids + suffix_ids, dtype=np.int32)
        flags = np.asarray([0] * len(prefix_ids) + [1] * len(suffix_ids), dtype=np.int32)
        return Prompt(tokens=tokens, mask_ar=flags, mask_loss=flags.copy())


def _load_processor(proto: bytes, name: str) -> spm.SentencePieceProcessor:
    """Parse the proto with sentencepiece, turning its errors into a one-line TokenizerError."""
    if not proto:
        raise TokenizerError(f"{name}: tokenizer model is empty")
    try:
        return spm.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerError(f"{name}: not a valid SentencePiece model ({reason})") from None


def _validate_layout(sp: spm.SentencePieceProcessor, name: str) -> None:
    """Check pad/eos/bos/unk, "\\n" and the loc/seg tail; raise naming the first bad id."""
    size = sp.get_piece_size()
    minimum = NEWLINE_ID + 1 + NUM_SPECIAL_TAIL
    if size < minimum:
        raise TokenizerError(f"{name}: vocabulary has {size} pieces; the PaliGemma layout needs at least {minimum}")
    for i, piece in SPECIAL_PIECES.items():
        if sp.id_to_piece(i) != piece:
            raise TokenizerError(f"{name}: expected {piece!r} at id {i}, found {sp.id_to_piece(i)!r}")
    for what, i, want in (("pad", sp.pad_id(), PAD_ID), ("eos", sp.eos_id(), EOS_ID),
                          ("bos", sp.bos_id(), BOS_ID), ("unk", sp.unk_id(), UNK_ID)):
        if i != want:
            raise TokenizerError(f"{name}: {what} id is {i}, expected {want}")
    if sp.encode("\n", out_type=int) != [NEWLINE_ID]:
        raise TokenizerError(f"{name}: '\\n' does not encode to the single id {NEWLINE_ID}")
    tail = [loc_piece(i) for i in range(NUM_LOC_TOKENS)] + [seg_piece(i) for i in range(NUM_SEG_TOKENS)]
    start = size - NUM_SPECIAL_TAIL
    for offset, piece in enumerate(tail):
        found = sp.id_to_piece(start + offset)
        if found != piece:
            raise TokenizerError(f"{name}: expected {piece!r} at id {start + offset}, found {found!r}")
    expected_ids = list(range(start, size))
    if sp.encode("".join(tail), out_type=int) != expected_ids:
        raise TokenizerError(f"{name}: <loc>/<seg> text does not encode to single ids "
                             f"(they must be USER_DEFINED pieces)")


# --- synthetic model -----------------------------------------------------------------------------

_COLORS = "red green blue yellow orange purple white black gray pink brown cyan".split()
_SHAPES = "circle square triangle star rectangle ellipse hexagon diamond".split()
_TASK_WORDS = ("caption en answer ocr detect segment how many what color is the there a an of and in "
               "on with left right top bottom image picture shows").split()
_COMMON_WORDS = (
    "circles squares triangles stars rectangles ellipses hexagons diamonds shape shapes "
    "zero one two three four five six seven eight nine ten yes no "
    "this that these those it its are was were be been has have had do does did not "
    "to for at by from as or but if then so than too very "
    "big small large little tall short long wide dark light bright "
    "above below under over near next behind front middle center corner side "
    "background foreground object objects text word words letter number "
    "some all each every other more most few only also just "
    "photo scene view shown showing contains there's here where which who why when"
).split()


def _word_list(extra_words: Sequence[str]) -> list[str]:
    """Built-in + extra words, deduplicated in first-seen order (so output is deterministic)."""
    words: list[str] = []
    seen: set[str] = set()
    for w in [*_COLORS, *_SHAPES, *_TASK_WORDS, *_COMMON_WORDS, *extra_words]:
        if not isinstance(w, str) or not w or any(c.isspace() or c == "▁" for c in w):
            raise TokenizerError(f"extra word {w!r}: words must be non-empty strings without whitespace")
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _text_pieces(extra_words: Sequence[str]) -> list[tuple[str, float]]:
    """Normal pieces with scores where fewer, longer pieces win the Viterbi search."""
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation + "▁"
    candidates = list(chars)
    for w in _word_list(extra_words):
        candidates += ["▁" + w, w]
    out: list[tuple[str, float]] = []
    seen = {"\n"}
    for piece in candidates:
        if piece not in seen:
            seen.add(piece)
            # Every piece costs ~10; a longer piece is slightly cheaper, so whole words beat characters.
            out.append((piece, -10.0 + 0.1 * min(len(piece), 50)))
    return out


def build_synthetic_tokenizer(vocab_size: int, extra_words: Sequence[str] = ()) -> bytes:
    """A serialized UNIGRAM model with PaliGemma's special-token layout, built without training.

    Layout: 0 `<pad>`, 1 `<eos>`, 2 `<bos>`, 3 `<unk>`, 4..107 `<unusedN>` (CONTROL), 108 "\\n",
    256 byte-fallback pieces, characters, "▁word"/"word" pieces, `<unusedN>` filler, then
    1024 `<locNNNN>` and 128 `<segNNN>` (USER_DEFINED). Same arguments give the same bytes.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb  # build-time only: needs protobuf

    piece_cls = pb.ModelProto.SentencePiece
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TokenizerError(f"vocab_size must be an int, got {vocab_size!r}")
    num_text = vocab_size - NUM_SPECIAL_TAIL
    head = [("<pad>", piece_cls.CONTROL), ("<eos>", piece_cls.CONTROL), ("<bos>", piece_cls.CONTROL),
            ("<unk>", piece_cls.UNKNOWN)]
    unused = 0
    pieces: list[tuple[str, float, int]] = [(p, 0.0, t) for p, t in head]
    while len(pieces) < NEWLINE_ID:
        pieces.append((f"<unused{unused}>", 0.0, piece_cls.CONTROL))
        unused += 1
    pieces.append(("\n", -10.0, piece_cls.NORMAL))
    pieces += [(f"<0x{b:02X}>", 0.0, piece_cls.BYTE) for b in range(256)]
    pieces += [(p, s, piece_cls.NORMAL) for p, s in _text_pieces(extra_words)]
    if len(pieces) > num_text:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: the synthetic layout needs "
                             f"{len(pieces) + NUM_SPECIAL_TAIL} ids ({len(pieces)} text pieces + "
                             f"{NUM_SPECIAL_TAIL} loc/seg)")
    while len(pieces) < num_text:
        pieces.append((f"<unused{unused}>", 0.0, piece_cls.CONTROL))
        unused += 1
    pieces += [(loc_piece(i), 0.0, piece_cls.USER_DEFINED) for i in range(NUM_LOC_TOKENS)]
    pieces += [(seg_piece(i), 0.0, piece_cls.USER_DEFINED) for i in range(NUM_SEG_TOKENS)]

    model = pb.ModelProto()
    for piece, score, kind in pieces:
        model.pieces.add(piece=piece, score=score, type=kind)
    spec = model.trainer_spec
    spec.model_type = pb.TrainerSpec.UNIGRAM
    spec.vocab_size = vocab_size
    spec.byte_fallback = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = UNK_ID, BOS_ID, EOS_ID, PAD_ID
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = "<unk>", "<bos>", "<eos>", "<pad>"
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return model.SerializeToString(deterministic=True)
