"""AdamW (b2 0.999, global-norm clip 1.0) on a linear-warmup + cosine schedule: big_vision's full-transfer recipe.

`optax.adamw` is `scale_by_adam -> add_decayed_weights -> scale_by_learning_rate`;
here the last link is `apply_lr`, applied by the step with the rate as an
input computed on the host from the step number (`lr_schedule`). The
trajectory is the same, but one compiled step then serves every schedule,
`--steps` and `--lr` (changing them on resume does not recompile), and the
logged rate is exactly the one applied. The optimizer sees only the
trainable tree (`trainable.split_params`), so the clip norm is the norm of
the gradients actually applied. Weight decay (off by default, as in the
PaliGemma transfers) touches matmul weights and LoRA adapters, never norm
scales or biases.
"""

from __future__ import annotations

import jax
import optax

from pg2edge.quantize.matmul_view import is_matmul_weight

B1, B2, EPS, CLIP_NORM = 0.9, 0.999, 1e-8, 1.0


def lr_schedule(peak: float, steps: int, warmup: float) -> optax.Schedule:
    """0 -> `peak` linearly over `round(warmup * steps)` steps, then cosine to 0 at `steps`."""
    warmup_steps = int(round(warmup * steps))
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
                                              decay_steps=max(steps, warmup_steps + 1), end_value=0.0)


def _decay_mask(tree: dict) -> dict:
    """True on matmul weights and adapters: decaying norm scales or biases only hurts."""
    def decays(path, _leaf) -> bool:
        keys = [str(getattr(p, "key", p)) for p in path]
        return keys[0] == "lora" or is_matmul_weight("/".join(keys[1:]))

    return jax.tree_util.tree_map_with_path(decays, tree)


def make_optimizer(weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Clip, Adam moments, decoupled weight decay over a `{"params": ..., "lora": ...}` tree (lr: `apply_lr`)."""
    links = [optax.clip_by_global_norm(CLIP_NORM), optax.scale_by_adam(b1=B1, b2=B2, eps=EPS)]
    if weight_decay:
        links.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
    return optax.chain(*links)


def apply_lr(updates: dict, lr: jax.Array) -> dict:
    """The descent step `-lr * update` (optax's `scale_by_learning_rate`, with `lr` a traced input)."""
    return jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
