"""The jitted train and eval steps: effective weights -> `pg2edge.model.forward` -> suffix loss -> AdamW.

Weights the forward pass sees are built inside the step from the f32 master
copy: join trainable + frozen, merge LoRA, cast to the compute dtype,
fake-quantize for QAT, then gather them whole (explicit FSDP: the transpose
of that gather reduce-scatters the gradients back onto the shards).
Gradient accumulation is a `lax.scan` over the leading micro-batch axis, so
one call is one optimizer step whatever `accum` is, the schedule counts
optimizer steps, and a checkpoint never falls between micro-batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from pg2edge.config import ModelConfig
from pg2edge.model import forward
from pg2edge.quantize.recipes import Recipe
from pg2edge.train.lora import LoraConfig, merge_lora
from pg2edge.train.loss import batch_loss
from pg2edge.train.optim import apply_lr
from pg2edge.train.qat import fake_quant_tree
from pg2edge.train.sharding import batch_sharding, replicated
from pg2edge.train.trainable import join_params

SUMS = ("loss_sum", "examples", "correct", "tokens")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TrainState:
    """Everything a checkpoint holds besides the frozen weights (which are reloaded from the source)."""

    step: jax.Array  # int32 []: optimizer steps taken
    trainable: dict  # {"params": trainable base weights (f32 master), "lora": adapters (f32) or {}}
    opt_state: optax.OptState
    rng: jax.Array  # uint32 [2]: base key; step i uses fold_in(rng, i) (nothing in the step is random yet)


@dataclass(frozen=True)
class StepSpec:
    """What turns master weights into the forward pass's weights."""

    cfg: ModelConfig
    compute_dtype: jnp.dtype
    lora: LoraConfig | None = None
    qat: Recipe | None = None
    distill: float = 0.0  # weight of KL(teacher || student) per target position; the teacher is the source model


def merged_params(trainable: dict, frozen: dict, spec: StepSpec) -> dict:
    """The plain model weights in the compute dtype: what the run exports (adapters merged, no fake-quant)."""
    params = join_params(trainable["params"], frozen)
    if spec.lora is not None:
        params = merge_lora(params, trainable["lora"], spec.lora)
    return jax.tree.map(lambda w: w.astype(spec.compute_dtype), params)


def effective_params(trainable: dict, frozen: dict, spec: StepSpec, mesh: Mesh | None = None) -> dict:
    """The weights `forward` runs with: merged, fake-quantized for QAT, gathered whole when a mesh is given."""
    params = merged_params(trainable, frozen, spec)
    if spec.qat is not None:
        params = fake_quant_tree(params, spec.qat, ste=True)
    if mesh is not None:
        params = jax.lax.with_sharding_constraint(params, replicated(mesh))
    return params


def loss_fn(trainable: dict, frozen: dict, micro: dict, spec: StepSpec, mesh: Mesh | None = None,
            teacher: dict | None = None) -> tuple[jax.Array, dict]:
    """Loss of one micro-batch ([B, ...] arrays) and its summed stats (distilled from `teacher` if given)."""
    params = effective_params(trainable, frozen, spec, mesh)
    inputs = (micro["pixels"], micro["tokens"], micro["mask_ar"], micro["input_mask"])
    logits = forward(params, spec.cfg, *inputs)
    teacher_logits = None
    if teacher and spec.distill:
        if mesh is not None:
            teacher = jax.lax.with_sharding_constraint(teacher, replicated(mesh))
        teacher_logits = forward(jax.lax.stop_gradient(teacher), spec.cfg, *inputs)
    return batch_loss(logits, micro["tokens"], micro["mask_loss"], micro["weight"], teacher_logits, spec.distill)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def train_step(state: TrainState, frozen: dict, batch: dict, lr: jax.Array, teacher: dict, *, spec: StepSpec,
               optimizer: optax.GradientTransformation, mesh: Mesh | None = None) -> tuple[TrainState, dict]:
    """One optimizer step over a [K, B, ...] batch at rate `lr`: K micro-batch gradients averaged, clipped, applied.

    `teacher`: the source model's weights when distilling (`spec.distill`), else {}.
    """
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, spec=spec, mesh=mesh, teacher=teacher), has_aux=True)

    def micro(carry, mb):
        (loss, sums), grads = grad_fn(state.trainable, frozen, mb)
        return _add(carry, (grads, sums)), loss

    zeros = (jax.tree.map(jnp.zeros_like, state.trainable), {k: jnp.zeros((), jnp.float32) for k in SUMS})
    (grads, sums), losses = jax.lax.scan(micro, zeros, batch)
    grads = jax.tree.map(lambda g: g / losses.shape[0], grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    new = TrainState(step=state.step + 1, trainable=optax.apply_updates(state.trainable, apply_lr(updates, lr)),
                     opt_state=opt_state, rng=state.rng)
    metrics = {"loss": jnp.mean(losses), "token_acc": sums["correct"] / jnp.maximum(sums["tokens"], 1.0),
               "grad_norm": optax.tree.norm(grads),
               "target_tokens": sums["tokens"]}
    return new, metrics


def eval_step(trainable: dict, frozen: dict, batch: dict, *, spec: StepSpec, mesh: Mesh | None = None) -> dict:
    """Summed stats of a [1, B, ...] eval batch (padding rows have weight 0)."""
    _, sums = loss_fn(trainable, frozen, jax.tree.map(lambda x: x[0], batch), spec, mesh)
    return sums


def compile_steps(spec: StepSpec, optimizer: optax.GradientTransformation, mesh: Mesh, state_shardings: object,
                  frozen_shardings: object, teacher_shardings: object = None):
    """(train_step, eval_step) jitted with explicit in/out shardings; the state is donated off CPU."""
    data = batch_sharding(mesh)
    donate = (0,) if jax.default_backend() != "cpu" else ()
    train = jax.jit(functools.partial(train_step, spec=spec, optimizer=optimizer, mesh=mesh),
                    in_shardings=(state_shardings, frozen_shardings, data, replicated(mesh),
                                  replicated(mesh) if teacher_shardings is None else teacher_shardings),
                    out_shardings=(state_shardings, replicated(mesh)), donate_argnums=donate)
    evaluate = jax.jit(functools.partial(eval_step, spec=spec, mesh=mesh),
                       in_shardings=(state_shardings.trainable, frozen_shardings, data),
                       out_shardings=replicated(mesh))
    return train, evaluate
