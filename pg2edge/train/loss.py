"""Next-token loss on the suffix only, normalized per example (big_vision's transfer convention).

Each example's summed target NLL is divided by its own target count before
the batch mean, so a long answer does not outweigh a short one; an example
whose targets were all truncated away contributes 0 but still counts in the
mean, as in big_vision. Rows with weight 0 (eval padding) count nowhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_stats(logits_btv: jax.Array, tokens_bt: jax.Array, mask_loss_bt: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per example: (summed target NLL, correct argmax count, target count), each f32 [B].

    Position t predicts token t + 1, so logits drop the last position and
    targets/masks drop the first.
    """
    logits = logits_btv[:, :-1].astype(jnp.float32)
    targets = tokens_bt[:, 1:]
    mask = mask_loss_bt[:, 1:].astype(jnp.float32)
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - top
    target = jnp.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    nll = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1)) - target
    # The target is the argmax when it reaches the maximum (the max log_softmax needs anyway: no second pass
    # over the vocabulary, as an argmax would take; a tie, which f32 logits all but never make, counts as correct).
    correct = (target >= 0.0).astype(jnp.float32)
    return jnp.sum(nll * mask, axis=1), jnp.sum(correct * mask, axis=1), jnp.sum(mask, axis=1)


def distill_sums(logits_btv: jax.Array, teacher_btv: jax.Array, mask_loss_bt: jax.Array) -> jax.Array:
    """Per example: summed KL(teacher || student) over the target positions, f32 [B].

    Distilling the float model into its fake-quantized self (QAT) pulls the
    quantized model toward the float model's whole distribution, not only its
    argmax on the training labels: what agreement with the float model measures.
    """
    logp = jax.nn.log_softmax(logits_btv[:, :-1].astype(jnp.float32), axis=-1)
    logq = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_btv[:, :-1]).astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    return jnp.sum(kl * mask_loss_bt[:, 1:].astype(jnp.float32), axis=1)


def example_losses(nll_b: jax.Array, count_b: jax.Array) -> jax.Array:
    """Each example's mean target NLL (0 when it has no targets)."""
    return nll_b / jnp.maximum(count_b, 1.0)


def batch_loss(logits_btv: jax.Array, tokens_bt: jax.Array, mask_loss_bt: jax.Array, weight_b: jax.Array,
               teacher_btv: jax.Array | None = None, distill: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted mean of per-example losses, and summed stats that aggregate exactly across batches.

    With a teacher, each target position's loss is `(1 - distill) * NLL + distill * KL(teacher || student)`.
    """
    nll, correct, count = token_stats(logits_btv, tokens_bt, mask_loss_bt)
    if teacher_btv is not None and distill:
        nll = (1.0 - distill) * nll + distill * distill_sums(logits_btv, teacher_btv, mask_loss_bt)
    per_example = example_losses(nll, count) * weight_b
    examples = jnp.sum(weight_b)
    loss = jnp.sum(per_example) / jnp.maximum(examples, 1.0)
    sums = {"loss_sum": jnp.sum(per_example), "examples": examples,
            "correct": jnp.sum(correct * weight_b), "tokens": jnp.sum(count * weight_b)}
    return loss, sums
