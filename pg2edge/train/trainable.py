"""Which parameters train: a name mask that splits the tree into a trainable and a frozen part.

The split is structural, not just an optimizer mask: gradients are taken
with respect to the trainable part only, so frozen weights get no gradient
buffers, no accumulation carry and no optimizer state (with
`optax.multi_transform` + `set_to_zero` the frozen gradients would still
be computed and carried through the accumulation scan). `attn` follows
big_vision's colab (`llm/layers/attn/*`); `decoder` freezes the image tower
but trains its projector and the whole decoder (a pretrained tower kept
safe from a fresh decoder's gradients); under `lora` every base weight
is frozen and only the adapters (`lora.py`) train.
"""

from __future__ import annotations

import fnmatch

from pg2edge.config import ConfigError
from pg2edge.param_layout import flatten, unflatten

PATTERNS = {"all": ("*",), "attn": ("llm/layers/attn/*",), "decoder": ("llm/*", "img/head/*"), "lora": ()}


def is_trainable(name: str, mode: str) -> bool:
    """Whether base parameter `name` gets gradients in `mode`."""
    if mode not in PATTERNS:
        raise ConfigError(f"trainable mode {mode!r}: expected one of {', '.join(PATTERNS)}")
    return any(fnmatch.fnmatchcase(name, p) for p in PATTERNS[mode])


def split_params(params: dict, mode: str) -> tuple[dict, dict]:
    """(trainable, frozen) nested trees whose union is `params`."""
    flat = flatten(params)
    train = {k: v for k, v in flat.items() if is_trainable(k, mode)}
    frozen = {k: v for k, v in flat.items() if not is_trainable(k, mode)}
    return unflatten(train), unflatten(frozen)


def join_params(trainable: dict, frozen: dict) -> dict:
    """The full nested tree again (inverse of `split_params`)."""
    return unflatten({**flatten(frozen), **flatten(trainable)})
