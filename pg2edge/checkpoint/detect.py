"""Which format and which PaliGemma 2 variant a checkpoint holds, from file headers alone.

The variant is read off a few signature shapes (vision width/depth/patch/number
of patches, which gives the resolution; text width/depth; vocabulary rows) and
matched against `config.VARIANTS`; full validation happens afterwards, so a
damaged known variant is reported by its missing or misshapen key rather than
as "unknown".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from pg2edge.checkpoint.hf import INDEX_FILE, SINGLE_FILE, HFIndex, hf_index
from pg2edge.checkpoint.hf_config import find_hf_config, read_final_softcap
from pg2edge.checkpoint.hf_mapping import padded_vocab
from pg2edge.checkpoint.npz import npz_index
from pg2edge.checkpoint.validate import Shape, TensorInfo, fail
from pg2edge.config import VARIANTS, ModelConfig

NPZ, SAFETENSORS, SHARDED = "npz", "safetensors", "safetensors-sharded"
FORMATS = (NPZ, SAFETENSORS, SHARDED)


class Signature(NamedTuple):
    """The shapes that tell variants apart."""

    vision_width: int
    vision_depth: int
    patch_size: int
    num_patches: int
    text_width: int
    text_depth: int
    vocab_rows: int

    def describe(self) -> str:
        return (f"vision width {self.vision_width} depth {self.vision_depth} patch {self.patch_size} "
                f"patches {self.num_patches}, text width {self.text_width} depth {self.text_depth} "
                f"vocab rows {self.vocab_rows}")


def detect_format(path: str | os.PathLike) -> str:
    """"npz" | "safetensors" | "safetensors-sharded", from the name or, failing that, the first bytes."""
    path = Path(path)
    if not path.exists():
        raise fail(path, "no such file or directory")
    if path.is_dir():
        for name, fmt in ((SINGLE_FILE, SAFETENSORS), (INDEX_FILE, SHARDED)):
            if (path / name).is_file():
                return fmt
        raise fail(path, f"expected a directory holding {SINGLE_FILE} or {INDEX_FILE}, found neither")
    for suffix, fmt in ((".index.json", SHARDED), (".safetensors", SAFETENSORS), (".npz", NPZ)):
        if path.name.endswith(suffix):
            return fmt
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK"):
        return NPZ
    if len(head) == 9 and head[8:9] == b"{":
        return SAFETENSORS
    raise fail(path, "expected a .npz, .safetensors or model.safetensors.index.json checkpoint, "
                     f"found unrecognised content starting {head!r}")


def _shape(index: Mapping[str, TensorInfo], key: str, ndim: int, source: object, shown: str | None = None) -> Shape:
    if key not in index:
        raise fail(source, "missing (needed to detect the variant)", key=shown or key)
    shape = tuple(index[key].shape)
    if len(shape) != ndim:
        raise fail(source, f"expected a {ndim}-d tensor, found shape {shape}", key=shown or key)
    return shape


def npz_signature(index: Mapping[str, TensorInfo], source: object) -> Signature:
    """Signature of a big_vision param table."""
    kernel = _shape(index, "img/embedding/kernel", 4, source)
    depth = _shape(index, "img/Transformer/encoderblock/LayerNorm_0/scale", 2, source)[0]
    patches = _shape(index, "img/pos_embedding", 3, source)[1]
    vocab, width = _shape(index, "llm/embedder/input_embedding", 2, source)
    text_depth = _shape(index, "llm/layers/pre_attention_norm/scale", 2, source)[0]
    return Signature(kernel[3], depth, kernel[0], patches, width, text_depth, vocab)


def _num_layers(names: Mapping[str, object], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for name in names if (m := pattern.match(name))]
    return max(found) + 1 if found else 0


def hf_signature(index: HFIndex) -> Signature:
    """Signature of an HF checkpoint (canonical names)."""
    infos = {name: entry.info for name, entry in index.entries.items()}

    def shape(name: str, ndim: int) -> Shape:
        stored = index.entries[name].name if name in index.entries else name
        return _shape(infos, name, ndim, index.source, shown=stored)

    patch = shape("vision_tower.embeddings.patch_embedding.weight", 4)
    patches = shape("vision_tower.embeddings.position_embedding.weight", 2)[0]
    rows, width = shape("language_model.embed_tokens.weight", 2)
    return Signature(patch[0], _num_layers(infos, "vision_tower.encoder.layers."), patch[2], patches, width,
                     _num_layers(infos, "language_model.layers."), rows)


def match_variant(sig: Signature, source: object, padded: bool) -> ModelConfig:
    """The variant with this signature; `padded`: vocab rows may include HF's <image> + padding."""
    for cfg in VARIANTS.values():
        v, t = cfg.vision, cfg.text
        vocab_ok = (t.vocab_size <= sig.vocab_rows <= padded_vocab(t.vocab_size) if padded
                    else sig.vocab_rows == t.vocab_size)
        if (vocab_ok and (v.width, v.depth, v.patch_size, v.num_patches, t.width, t.depth)
                == (sig.vision_width, sig.vision_depth, sig.patch_size, sig.num_patches, sig.text_width,
                    sig.text_depth)):
            return cfg
    raise fail(source, f"expected the shapes of a known variant ({', '.join(VARIANTS)}), found {sig.describe()}")


def variant_of(fmt: str, index: Mapping[str, TensorInfo] | HFIndex, path: str | os.PathLike) -> ModelConfig:
    """The variant of an already-indexed checkpoint; HF's config.json supplies the final-logit soft-cap."""
    if fmt == NPZ:
        return match_variant(npz_signature(index, path), path, padded=False)
    cfg = match_variant(hf_signature(index), index.source, padded=True)
    config_path = find_hf_config(path)
    if config_path is not None:
        cfg = cfg.replace(final_logit_softcap=read_final_softcap(config_path))
    return cfg


def index_checkpoint(path: str | os.PathLike, fmt: str) -> Mapping[str, TensorInfo] | HFIndex:
    """Read every header of a checkpoint in format `fmt` (no tensor data)."""
    return npz_index(path) if fmt == NPZ else hf_index(path, sharded=fmt == SHARDED)


def detect_variant(path: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` whose shapes the checkpoint at `path` has."""
    fmt = detect_format(path)
    return variant_of(fmt, index_checkpoint(path, fmt), path)
