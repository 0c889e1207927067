"""Model hyperparameters for every PaliGemma 2 variant pg2edge knows.

Every other module takes a `ModelConfig`; nothing hard-codes a width. The
published variants are 3B/10B/28B x 224/448/896; `tiny` (tests) and `mini` (the
shipped trained model) keep the exact architecture (GQA, alternating local/global
layers, soft-caps, the special-token layout at the end of the vocabulary) at
widths that run in milliseconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pg2edge.errors import Pg2EdgeError

NUM_LOC_TOKENS = 1024
NUM_SEG_TOKENS = 128
PAD_ID, EOS_ID, BOS_ID, NEWLINE_ID = 0, 1, 2, 108


class ConfigError(Pg2EdgeError, ValueError):
    """An unknown size/resolution or an inconsistent config."""


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP ViT (no pooling head): the image tower."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class TextConfig:
    """Gemma 2 decoder."""

    width: int = 2304
    depth: int = 26
    mlp_dim: int = 9216
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 256
    query_pre_attn_scalar: int = 256
    vocab_size: int = 257152
    attn_logit_softcap: float = 50.0
    final_logit_softcap: float = 30.0  # big_vision transfer configs use 0 (= off)
    sliding_window: int = 4096
    sliding_window_layers: str = "even"  # HF: layers 0, 2, ... local; "none": all global
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    @property
    def num_text_pieces(self) -> int:
        """Vocabulary size before the <loc>/<seg> tokens."""
        return self.vocab_size - NUM_LOC_TOKENS - NUM_SEG_TOKENS

    @property
    def loc_start(self) -> int:
        return self.num_text_pieces

    @property
    def seg_start(self) -> int:
        return self.num_text_pieces + NUM_LOC_TOKENS

    def is_local_layer(self, layer: int) -> bool:
        """Whether `layer` uses the sliding-window mask."""
        if self.sliding_window_layers == "even":
            return layer % 2 == 0
        if self.sliding_window_layers == "none":
            return False
        raise ConfigError(f"sliding_window_layers: expected 'even' or 'none', found {self.sliding_window_layers!r}")


@dataclass(frozen=True)
class ModelConfig:
    """A whole PaliGemma 2 variant: vision tower, projector, decoder, preprocessing."""

    size: str
    vision: VisionConfig
    text: TextConfig
    resize_filter: str = "bilinear"  # big_vision's; HF's processor uses bicubic

    @property
    def name(self) -> str:
        return f"{self.size}-{self.vision.image_size}"

    @property
    def resolution(self) -> int:
        return self.vision.image_size

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    def replace(self, **text_overrides: object) -> "ModelConfig":
        """A copy with decoder fields changed (e.g. final_logit_softcap=0.0)."""
        return dataclasses.replace(self, text=dataclasses.replace(self.text, **text_overrides))


_TEXT = {
    "3B": TextConfig(width=2304, depth=26, mlp_dim=9216, num_heads=8, num_kv_heads=4,
                     head_dim=256, query_pre_attn_scalar=256),
    "10B": TextConfig(width=3584, depth=42, mlp_dim=14336, num_heads=16, num_kv_heads=8,
                      head_dim=256, query_pre_attn_scalar=256),
    "28B": TextConfig(width=4608, depth=46, mlp_dim=36864, num_heads=32, num_kv_heads=16,
                      head_dim=128, query_pre_attn_scalar=4608 // 32),
    # Same architecture, small widths: 896 text pieces + 1024 loc + 128 seg.
    "tiny": TextConfig(width=64, depth=4, mlp_dim=128, num_heads=4, num_kv_heads=2,
                       head_dim=16, query_pre_attn_scalar=16, vocab_size=2048,
                       sliding_window=16),
    # The variant pg2edge trains on its synthetic suite and ships (pg2edge/assets/mini-112). HF's 4096 window,
    # as the published models: a 32-token one hid the image from later answer tokens in the local layers, which
    # cost every task (README: "Every layer sees the whole image").
    "mini": TextConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=2,
                       head_dim=32, query_pre_attn_scalar=32, vocab_size=2048),
}
_SMALL_VISION = {
    "tiny": dict(width=48, depth=2, mlp_dim=96, num_heads=4, patch_size=14),
    "mini": dict(width=96, depth=3, mlp_dim=384, num_heads=4, patch_size=14),
}

PUBLISHED_SIZES = ("3B", "10B", "28B")
PUBLISHED_RESOLUTIONS = (224, 448, 896)
TINY_RESOLUTIONS = (56, 112, 224)
SMALL_RESOLUTIONS = {"tiny": TINY_RESOLUTIONS, "mini": (112, 224)}
DEFAULT_RES = {"3B": 224, "10B": 224, "28B": 224, "tiny": 56, "mini": 112}


def _build_variants() -> dict[str, ModelConfig]:
    variants = {}
    for size in PUBLISHED_SIZES:
        for res in PUBLISHED_RESOLUTIONS:
            cfg = ModelConfig(size, VisionConfig(image_size=res), _TEXT[size])
            variants[cfg.name] = cfg
    for size, resolutions in SMALL_RESOLUTIONS.items():
        for res in resolutions:
            cfg = ModelConfig(size, VisionConfig(image_size=res, **_SMALL_VISION[size]), _TEXT[size])
            variants[cfg.name] = cfg
    return variants


VARIANTS: dict[str, ModelConfig] = _build_variants()


def get_config(size: str, res: int | None = None) -> ModelConfig:
    """Look up a variant by size ("3B", "tiny", ...) and resolution."""
    size_key = {s.lower(): s for s in _TEXT}.get(str(size).lower())
    if size_key is None:
        raise ConfigError(f"unknown size {size!r}: expected one of {', '.join(_TEXT)}")
    res = DEFAULT_RES[size_key] if res is None else int(res)
    name = f"{size_key}-{res}"
    if name not in VARIANTS:
        allowed = SMALL_RESOLUTIONS.get(size_key, PUBLISHED_RESOLUTIONS)
        raise ConfigError(f"unknown resolution {res} for size {size_key}: expected one of "
                          f"{', '.join(map(str, allowed))}")
    return VARIANTS[name]


def config_to_dict(cfg: ModelConfig) -> dict:
    """JSON-ready form, for manifests and checkpoints."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> ModelConfig:
    """Inverse of `config_to_dict`."""
    return ModelConfig(size=d["size"], vision=VisionConfig(**d["vision"]),
                       text=TextConfig(**d["text"]), resize_filter=d.get("resize_filter", "bilinear"))
