"""Shared fixtures: the tiny variant and deterministic random weights in the model's tree."""

from __future__ import annotations

import numpy as np
import pytest

from pg2edge.config import get_config


def pytest_configure(config):
    """Start JAX's backends as the environment says, before any test: `finetune`'s CPU split
    (`pg2edge.cpu_devices`) applies only to a process whose backends have not started, so without this
    an in-process CLI test that happened to run first would change the devices of every later test."""
    import jax

    jax.devices()


@pytest.fixture(scope="session")
def tiny_cfg():
    return get_config("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_cfg):
    """A random tiny-56 big_vision .npz (scaled weights, so outputs depend on the input)."""
    from pg2edge.checkpoint import random_params, write_npz

    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    write_npz(path, random_params(tiny_cfg, seed=5, scale=0.1))
    return path


@pytest.fixture(scope="session")
def tiny_params(tiny_cfg):
    """Random tiny weights (float32, larger than init so logits are not flat)."""
    import jax
    import jax.numpy as jnp

    from pg2edge.model import init_params

    params = init_params(tiny_cfg, jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(tree, [jnp.asarray(x) for x in noisy])


@pytest.fixture(scope="session")
def tiny_pixels(tiny_cfg):
    rs = np.random.RandomState(0)
    r = tiny_cfg.resolution
    return rs.uniform(-1, 1, (2, r, r, 3)).astype(np.float32)
