"""The first `TrainState`, built directly in its sharded layout (no host ever holds the optimizer state)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from pg2edge.config import NUM_LOC_TOKENS, ModelConfig, TextConfig
from pg2edge.model import init_params
from pg2edge.param_layout import param_shapes, unflatten
from pg2edge.train.lora import LoraConfig, init_lora
from pg2edge.train.sharding import put_tree, replicated, tree_shardings
from pg2edge.train.step import TrainState
from pg2edge.train.trainable import split_params


def ordinal_loc_rows(text: TextConfig) -> jax.Array:
    """Unit-norm sinusoidal embedding rows for `<loc0000>`..`<loc1023>`: float32 [1024, width].

    A model trained from scratch otherwise learns 1024 unrelated classes from a few
    examples each; with rows that start close for close bins, the tied LM head's
    mistakes land a few bins away instead of anywhere (only random-init runs use this).
    """
    half = text.width // 2
    wavelengths = 4.0 * (2.0 * NUM_LOC_TOKENS / 4.0) ** (jnp.arange(half) / max(half - 1, 1))
    angles = 2 * math.pi * jnp.arange(NUM_LOC_TOKENS, dtype=jnp.float32)[:, None] / wavelengths[None]
    rows = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1) / math.sqrt(half)
    return jnp.pad(rows, ((0, 0), (0, text.width - 2 * half)))


def sincos_positions(grid: int, width: int) -> jax.Array:
    """2-D sine-cosine position embedding (MAE/ViT style): float32 [1, grid * grid, width].

    A from-scratch image tower otherwise spends much of a short run discovering
    where each patch is, which detection and segmentation depend on.
    """
    quarter = width // 4
    freqs = 1.0 / (10000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / max(quarter, 1)))
    ys, xs = jnp.meshgrid(jnp.arange(grid, dtype=jnp.float32), jnp.arange(grid, dtype=jnp.float32), indexing="ij")
    parts = [f(v.reshape(-1)[:, None] * freqs[None]) for v in (ys, xs) for f in (jnp.sin, jnp.cos)]
    table = jnp.concatenate(parts, axis=1)
    return jnp.pad(table, ((0, 0), (0, width - 4 * quarter)))[None]


def from_scratch_params(cfg: ModelConfig, key: jax.Array) -> dict:
    """`init_params` with ordinal `<loc>` rows in the (tied) embedding and 2-D sin-cos patch positions."""
    params = init_params(cfg, key)
    pos = params["img"]["pos_embedding"]
    params["img"]["pos_embedding"] = sincos_positions(cfg.vision.grid, cfg.vision.width).astype(pos.dtype)
    table = params["llm"]["embedder"]["input_embedding"]
    start = cfg.text.loc_start
    params["llm"]["embedder"]["input_embedding"] = table.at[start:start + NUM_LOC_TOKENS].set(
        ordinal_loc_rows(cfg.text).astype(table.dtype))
    return params


def _init(params: dict | None, key: jax.Array, *, cfg: ModelConfig, mode: str, compute_dtype: jnp.dtype,
          lora: LoraConfig | None, optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """(state at step 0, frozen weights in the compute dtype); `params=None` draws them from `key`."""
    if params is None:
        params = from_scratch_params(cfg, key)
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
