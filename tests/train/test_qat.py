"""QAT's jnp fake-quant is bit-identical to `pg2edge.quantize`'s numpy reference, and its gradient is the identity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg2edge.checkpoint import random_params
from pg2edge.config import get_config
from pg2edge.param_layout import flatten, unflatten
from pg2edge.quantize import Scheme, fake_quant_param, get_recipe
from pg2edge.quantize.recipes import fake_quant_params
from pg2edge.train.qat import fake_quant_tree, fake_quant_weight


@pytest.fixture(scope="module")
def tiny_flat():
    flat = random_params(get_config("tiny"), seed=11, scale=0.05)
    flat["llm/layers/mlp/linear"][0, :32] = 0.0  # all-zero blocks take the minimum-scale path
    flat["llm/layers/attn/q_einsum/w"][1, 0, 0, 0] = 3.5 * np.abs(flat["llm/layers/attn/q_einsum/w"][1]).max()
    return flat


@pytest.mark.parametrize("recipe", ["int4", "int8", "mixed"])
@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
def test_fake_quant_tree_equals_numpy_reference(tiny_flat, recipe, scale_dtype):
    r = get_recipe(recipe, block=32, scale_dtype=scale_dtype)
    want = fake_quant_params(tiny_flat, r)
    got = jax.jit(lambda p: fake_quant_tree(p, r))(unflatten({k: jnp.asarray(v) for k, v in tiny_flat.items()}))
    got = flatten(jax.device_get(got))
    assert set(got) == set(want)
    quantized = 0
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        np.testing.assert_array_equal(np.asarray(got[name], np.float32), np.asarray(w, np.float32), err_msg=name)
        quantized += r.scheme_for(name, w.shape) is not None
    assert quantized >= 10  # int4 blocks on the decoder, int8 fallback on the 48-wide vision tower


@pytest.mark.parametrize("name,shape", [
    ("llm/layers/attn/q_einsum/w", (1, 8, 2304, 256)),
    ("llm/layers/attn/kv_einsum/w", (1, 2, 4, 2304, 256)),
    ("llm/layers/attn/attn_vec_einsum/w", (1, 8, 256, 2304)),
    ("img/Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel", (1, 16, 72, 1152)),
])
@pytest.mark.parametrize("clip", ["max", "mse"])
def test_fake_quant_on_3b_layer_shapes(name, shape, clip):
    w = np.random.default_rng(0).standard_normal(shape, np.float32) * 0.02
    scheme = Scheme(bits=4, block=64, clip=clip)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x: fake_quant_weight(name, x, scheme))(w)),
                                  fake_quant_param(name, w, scheme))


def test_straight_through_forward_is_exact_and_gradient_is_identity(tiny_flat):
    r = get_recipe("int4", block=32)
    params = unflatten({k: jnp.asarray(v) for k, v in tiny_flat.items()})
    rng = np.random.default_rng(0)
    cot = jax.tree.map(lambda w: rng.standard_normal(w.shape).astype(np.float32), params)

    def objective(p, c):
        q = fake_quant_tree(p, r, ste=True)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(c), strict=True)), q

    grads, q = jax.jit(jax.grad(objective, has_aux=True))(params, cot)
    for name, w in fake_quant_params(tiny_flat, r).items():
        np.testing.assert_array_equal(flatten(q)[name], w, err_msg=name)
    for name, g in flatten(cot).items():
        np.testing.assert_array_equal(flatten(grads)[name], g, err_msg=name)
