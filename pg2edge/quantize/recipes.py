"""Quantization recipes: which scheme each parameter gets, and the fake-quant param tree they imply.

A recipe is data: an ordered tuple of (pattern, scheme) rules, first match
wins, applied only to matmul weights (see `matmul_view`); norm scales,
biases and `img/pos_embedding` always stay float. A pattern is a shell glob
(`llm/layers/*`) or, with an `re:` prefix, a regular expression matched
against the whole key.

When a rule asks for a block-wise scheme whose block does not divide the
weight's K (SigLIP's patch embedding has K = 14*14*3 = 588 and its MLP output
K = 4304; tiny test widths are small), the recipe's `fallback` (int8 per
channel) applies to that weight instead, so `int4` stays usable on every
variant. Reports and manifests show the scheme actually used.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from pg2edge.config import ConfigError
from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize.matmul_view import is_matmul_weight, matmul_label, matmul_view
from pg2edge.quantize.schemes import CLIPS, QuantizedTensor, Scheme, dequantize_rows, quantize

if TYPE_CHECKING:
    from pg2edge.quantize.gptq import Hessians

RECIPE_NAMES = ("f32", "int8", "int4", "mixed")
BLOCK_SIZES = (32, 64, 128)
DEFAULT_BLOCK = 32
INT8_PER_CHANNEL = Scheme(bits=8)

Rule = tuple[str, Scheme | None]  # (glob or "re:" regex, scheme; None = keep float)


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


@dataclass(frozen=True)
class Recipe:
    """A named, ordered set of (pattern, scheme) rules; `None` keeps a weight in float."""

    name: str
    block: int
    rules: tuple[Rule, ...]
    fallback: Scheme | None = INT8_PER_CHANNEL  # for a block that does not divide K
    # calibration Hessians: weights they cover get GPTQ codes instead of round-to-nearest (`quantize.gptq`)
    hessians: Hessians | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fallback is not None and self.fallback.block is not None:
            raise ValueError(f"recipe {self.name!r}: the fallback scheme must be per-channel, "
                             f"found {self.fallback.label}")

    def rule_for(self, name: str) -> Scheme | None:
        """The scheme the first matching rule names for `name`, before any shape check."""
        if not is_matmul_weight(name):
            return None
        for pattern, scheme in self.rules:
            if _matches(pattern, name):
                return scheme
        return None

    def scheme_for(self, name: str, shape: Sequence[int] | None = None) -> Scheme | None:
        """The scheme weight `name` gets (None = float); with `shape`, applies the block fallback."""
        scheme = self.rule_for(name)
        if scheme is None or shape is None or scheme.block is None:
            return scheme
        view = matmul_view(name, shape)
        return scheme if view.k % scheme.block == 0 else self.fallback

    def quantize(self, w_kn: np.ndarray, scheme: Scheme, *, name: str | None = None) -> QuantizedTensor:
        """One [K, N] matmul weight in `scheme`: GPTQ codes where the recipe has its Hessian, else nearest."""
        return quantize_with(self.hessians, w_kn, scheme, name=name)

    def to_dict(self) -> dict:
        """JSON-ready form for the bundle manifest."""
        return {
            "name": self.name,
            "block": self.block,
            "rules": [{"pattern": p, "scheme": None if s is None else s.to_dict()} for p, s in self.rules],
            "fallback": None if self.fallback is None else self.fallback.to_dict(),
        }


def _rules(name: str, int4: Scheme) -> tuple[Rule, ...]:
    if name == "f32":
        return (("*", None),)
    if name == "int8":
        return (("*", INT8_PER_CHANNEL),)
    if name == "int4":
        return (("*", int4),)
    # mixed: the vision tower, the tied embedding / LM head and the decoder's attention are the most
    # sensitive (the shipped mini model's logits: KL to float 4.4e-4 with attention int8, 1.2e-3 with
    # it int4), and the embedding's int8 rows are cheap to gather; the MLPs hold most of the weights
    # (3B: 82 % of a decoder layer).
    return (("img/*", INT8_PER_CHANNEL),
            ("llm/embedder/input_embedding", INT8_PER_CHANNEL),
            ("llm/layers/attn/*", INT8_PER_CHANNEL),
            ("llm/layers/*", int4),
            ("*", None))


def get_recipe(name: str, block: int = DEFAULT_BLOCK, scale_dtype: str = "float32", clip: str = "mse") -> Recipe:
    """The named recipe; `block` is the int4 block along K (32, 64 or 128); `clip` how int4 scales are chosen
    ("mse": searched for least error, what QAT trains against; "max": max|w| / 7, a faster conversion)."""
    key = str(name).lower()
    if key not in RECIPE_NAMES:
        raise ConfigError(f"unknown quantization recipe {name!r}: expected one of {', '.join(RECIPE_NAMES)}")
    if block not in BLOCK_SIZES:
        raise ConfigError(f"quantization block {block!r}: expected one of {', '.join(map(str, BLOCK_SIZES))}")
    if clip not in CLIPS:
        raise ConfigError(f"int4 clip {clip!r}: expected one of {', '.join(CLIPS)}")
    int4 = Scheme(bits=4, block=block, scale_dtype=scale_dtype, clip=clip)
    rules = tuple((p, None if s is None else replace(s, scale_dtype=scale_dtype)) for p, s in _rules(key, int4))
    return Recipe(name=key, block=block, rules=rules, fallback=replace(INT8_PER_CHANNEL, scale_dtype=scale_dtype))


def quantize_with(hessians: Hessians | None, w_kn: np.ndarray, scheme: Scheme, *,
                  name: str | None = None) -> QuantizedTensor:
    """Round-to-nearest codes of one [K, N] weight, or GPTQ's for the columns `hessians` covers."""
    if hessians is None:
        return quantize(w_kn, scheme, name=name)
    return hessians.quantize(w_kn, scheme, name=name)


def iter_quantized(name: str, w: np.ndarray, scheme: Scheme, hessians: Hessians | None = None
                   ) -> Iterator[tuple[tuple[int, ...], QuantizedTensor]]:
    """(lead index, QuantizedTensor) for every matmul stacked in weight `name`, one at a time
    (GPTQ codes for the matmuls `hessians` covers)."""
    view = matmul_view(name, np.shape(w))
    if view is None:
        raise ValueError(f"{name}: not a matmul weight, cannot quantize it")
    for index, w_kn in view.matrices(np.asarray(w, np.float32)):
        yield index, quantize_with(hessians, w_kn, scheme, name=matmul_label(name, index))


def quantize_param(name: str, w: np.ndarray, scheme: Scheme) -> dict[tuple[int, ...], QuantizedTensor]:
    """Every matmul stacked in weight `name`, quantized: {(layer[, k/v or gate/up]): QuantizedTensor}."""
    return dict(iter_quantized(name, w, scheme))


def fake_quant_param(name: str, w: np.ndarray, scheme: Scheme, hessians: Hessians | None = None) -> np.ndarray:
    """Weight `name` with each of its matmuls replaced by its fake-quant, in the stored layout (float32)."""
    view = matmul_view(name, np.shape(w))
    out = np.empty(view.shape, np.float32)
    out_kn = view.to_kn(out)
    in_place = np.may_share_memory(out_kn, out)  # to_kn gave a view of `out`: write through it
    if not in_place:
        out_kn = np.empty_like(out_kn)
    for index, qt in iter_quantized(name, w, scheme, hessians):
        target_nk = out_kn[index].T
        if target_nk.flags.c_contiguous:  # e.g. the embedding table: rows are stored as the codes are
            dequantize_rows(qt, out=target_nk)
        else:
            np.copyto(target_nk, dequantize_rows(qt))
    return out if in_place else np.ascontiguousarray(view.from_kn(out_kn))


def fake_quant_params(params: Mapping[str, object], recipe: Recipe) -> dict:
    """The param tree (flat or nested, as given) with every quantized weight replaced by its fake-quant.

    Weights the recipe keeps in float are passed through untouched (same object).
    """
    nested = any(isinstance(v, Mapping) for v in params.values())
    flat = flatten(dict(params)) if nested else dict(params)
    out = {}
    for name, w in flat.items():
        scheme = recipe.scheme_for(name, np.shape(w))
        out[name] = w if scheme is None else fake_quant_param(name, w, scheme, recipe.hessians)
    return unflatten(out) if nested else out
