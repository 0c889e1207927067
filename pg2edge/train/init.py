"""The first `TrainState`, built directly in its sharded layout (no host ever holds the optimizer state)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from pg2edge.config import ModelConfig
from pg2edge.model import init_params
from pg2edge.param_layout import param_shapes, unflatten
from pg2edge.train.lora import LoraConfig, init_lora
from pg2edge.train.sharding import put_tree, replicated, tree_shardings
from pg2edge.train.step import TrainState
from pg2edge.train.trainable import split_params


def _init(params: dict | None, key: jax.Array, *, cfg: ModelConfig, mode: str, compute_dtype: jnp.dtype,
          lora: LoraConfig | None, optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """(state at step 0, frozen weights in the compute dtype); `params=None` draws them from `key`."""
    if params is None:
        params = init_params(cfg, key)
    train, frozen = split_params(params, mode)
    train = jax.tree.map(lambda w: w.astype(jnp.float32), train)  # the f32 master copy
    frozen = jax.tree.map(lambda w: w.astype(compute_dtype), frozen)  # never updated: no master needed
    adapters = init_lora(params, lora, jax.random.fold_in(key, 1)) if lora is not None else {}
    tree = {"params": train, "lora": adapters}
    return TrainState(step=jnp.zeros((), jnp.int32), trainable=tree, opt_state=optimizer.init(tree), rng=key), frozen


def abstract_params(cfg: ModelConfig) -> dict:
    """ShapeDtypeStructs of the f32 param tree (to lay out a state without loading any weights)."""
    return unflatten({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in param_shapes(cfg).items()})


def state_layout(cfg: ModelConfig, mode: str, compute_dtype: jnp.dtype, lora: LoraConfig | None,
                 optimizer: optax.GradientTransformation, mesh: Mesh) -> tuple[TrainState, dict, object, object]:
    """(abstract state, abstract frozen tree, their shardings), from shapes alone."""
    fn = functools.partial(_init, cfg=cfg, mode=mode, compute_dtype=compute_dtype, lora=lora, optimizer=optimizer)
    state, frozen = jax.eval_shape(fn, abstract_params(cfg), jax.ShapeDtypeStruct((2,), jnp.uint32))
    return state, frozen, tree_shardings(state, mesh), tree_shardings(frozen, mesh)


def initial_state(cfg: ModelConfig, mode: str, compute_dtype: jnp.dtype, lora: LoraConfig | None,
                  optimizer: optax.GradientTransformation, mesh: Mesh, host_params: dict | None,
                  seed: int) -> tuple[TrainState, dict]:
    """Step-0 state and frozen weights, sharded; from `host_params` or (None) random-init from `seed`."""
    _, _, state_sh, frozen_sh = state_layout(cfg, mode, compute_dtype, lora, optimizer, mesh)
    key = jax.random.PRNGKey(seed)
    fn = functools.partial(_init, cfg=cfg, mode=mode, compute_dtype=compute_dtype, lora=lora, optimizer=optimizer)
    if host_params is None:
        init = jax.jit(lambda k: fn(None, k), in_shardings=replicated(mesh), out_shardings=(state_sh, frozen_sh))
        return init(key)
    params_sh = tree_shardings(host_params, mesh)
    params = put_tree(host_params, params_sh)
    init = jax.jit(fn, in_shardings=(params_sh, replicated(mesh)), out_shardings=(state_sh, frozen_sh))
    return init(params, key)
