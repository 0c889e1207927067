"""The model's own consistency: cached prefill+decode == teacher-forced forward, masks, sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pg2edge.config import VARIANTS, get_config
from pg2edge.model import forward, generate, init_params
from pg2edge.model.gemma2 import decode_layers, training_masks
from pg2edge.param_layout import flatten, param_count, param_shapes
from pg2edge.sampling import SamplingConfig

PROMPTS = [[2, 300, 301, 302, 108], [2, 400, 108]]


def _teacher_forced_logits(params, cfg, pixels, prompt, generated):
    """Logits of `forward` at the positions that predicted each generated token."""
    tokens = np.array([prompt + generated], np.int32)
    mask_ar = np.array([[0] * len(prompt) + [1] * len(generated)], np.int32)
    logits = forward(params, cfg, pixels, tokens, mask_ar, np.ones_like(tokens))
    return np.asarray(logits[0, len(prompt) - 1: len(prompt) - 1 + len(generated)])


def test_cached_generation_matches_teacher_forced_forward(tiny_cfg, tiny_params, tiny_pixels):
    gen = generate(tiny_params, tiny_cfg, tiny_pixels, PROMPTS, max_new_tokens=24, max_len=64)
    for row, prompt in enumerate(PROMPTS):
        ref = _teacher_forced_logits(tiny_params, tiny_cfg, tiny_pixels[row:row + 1], prompt, gen.tokens[row])
        np.testing.assert_allclose(gen.logits[row, :len(gen.tokens[row])], ref, atol=2e-4, rtol=1e-4)
    # the sequences pass the tiny sliding window (16), so local layers were exercised
    assert tiny_cfg.num_image_tokens + len(PROMPTS[0]) + 24 > 2 * tiny_cfg.text.sliding_window


def test_batched_rows_equal_single_rows(tiny_cfg, tiny_params, tiny_pixels):
    both = generate(tiny_params, tiny_cfg, tiny_pixels, PROMPTS, max_new_tokens=8, max_len=48)
    for row, prompt in enumerate(PROMPTS):
        one = generate(tiny_params, tiny_cfg, tiny_pixels[row:row + 1], [prompt], max_new_tokens=8, max_len=48)
        assert one.tokens[0] == both.tokens[row]


def test_stops_at_cache_capacity(tiny_cfg, tiny_params, tiny_pixels):
    max_len = tiny_cfg.num_image_tokens + len(PROMPTS[0]) + 3
    gen = generate(tiny_params, tiny_cfg, tiny_pixels[:1], PROMPTS[:1], max_new_tokens=50, max_len=max_len)
    assert gen.stop_reasons == ["cache_full"]
    assert len(gen.tokens[0]) == 4  # 3 free slots + the token predicted from the last one


def test_sampling_is_seeded(tiny_cfg, tiny_params, tiny_pixels):
    s = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, seed=7)
    a = generate(tiny_params, tiny_cfg, tiny_pixels[:1], PROMPTS[:1], max_new_tokens=12, max_len=48, sampling=s)
    b = generate(tiny_params, tiny_cfg, tiny_pixels[:1], PROMPTS[:1], max_new_tokens=12, max_len=48, sampling=s)
    assert a.tokens == b.tokens


def test_bf16_tracks_f32(tiny_cfg, tiny_params, tiny_pixels):
    bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), tiny_params)
    tokens = np.array([PROMPTS[0]], np.int32)
    zeros = np.zeros_like(tokens)
    f32 = forward(tiny_params, tiny_cfg, tiny_pixels[:1], tokens, zeros, np.ones_like(tokens))
    b16 = forward(bf, tiny_cfg, tiny_pixels[:1], tokens, zeros, np.ones_like(tokens))
    assert b16.dtype == jnp.float32
    cos = np.sum(f32 * b16) / np.linalg.norm(f32) / np.linalg.norm(b16)
    assert cos > 0.99


def test_prefix_lm_mask_follows_big_vision(tiny_cfg):
    mask_ar = jnp.array([[0, 0, 0, 1, 1, 1]])
    input_mask = jnp.array([[1, 1, 1, 1, 1, 0]])
    m = training_masks(tiny_cfg.text, mask_ar, input_mask).new_full[0]
    expected = np.array([[1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1, 0]], bool)
    np.testing.assert_array_equal(np.asarray(m), expected)


def test_outputs_from_returns_exactly_the_kept_rows_of_the_whole_pass(tiny_cfg, tiny_params):
    """Training skips the last layer's MLP at image rows; the text rows must come out as the full pass gives them."""
    t, keep = 40, 25
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, t, tiny_cfg.text.width)), jnp.float32)
    mask_ar = jnp.asarray([[0] * 30 + [1] * 10] * 2)
    masks = training_masks(tiny_cfg.text, mask_ar, jnp.ones((2, t), jnp.int32).at[1, -3:].set(0))
    pos = jnp.broadcast_to(jnp.arange(t), (2, t))
    full, kv = decode_layers(tiny_params["llm"], tiny_cfg.text, x, pos, masks)
    kept, kv_kept = decode_layers(tiny_params["llm"], tiny_cfg.text, x, pos, masks, outputs_from=keep)
    assert kept.shape == (2, t - keep, tiny_cfg.text.width)
    np.testing.assert_allclose(kept, full[:, keep:], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(kv_kept.k[-1], kv.k[-1])  # every row's keys: the last layer still attends to all


@pytest.mark.parametrize("name, billions", [("3B-224", 3.03), ("10B-448", 9.66), ("28B-896", 27.65)])
def test_full_size_variants_have_the_published_parameter_counts(name, billions):
    assert abs(param_count(VARIANTS[name]) / 1e9 - billions) < 0.01


@pytest.mark.parametrize("flat_limit", [None, 0])  # small tensors by power-of-4 size; every tensor at its own
def test_init_params_draws_each_tensor_as_a_per_shape_normal_would(tiny_cfg, flat_limit, monkeypatch):
    """Drawing by flat size gives exactly `jax.random.normal(split(key)[i], shape)` times the fan-in scale;
    norms are neutral and biases zero; the layout is `param_shapes`."""
    from pg2edge.model import init

    if flat_limit is not None:
        monkeypatch.setattr(init, "FLAT_LIMIT", flat_limit)
    key = jax.random.PRNGKey(3)
    params = flatten(init_params(tiny_cfg, key))
    shapes = param_shapes(tiny_cfg)
    assert {k: tuple(x.shape) for k, x in params.items()} == shapes
    keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
    name = "llm/layers/mlp/linear"  # [depth, mlp, width]: fan-in mlp
    want = jax.random.normal(keys[name], shapes[name], jnp.float32) * tiny_cfg.text.mlp_dim ** -0.5
    np.testing.assert_array_equal(params[name], want)
    np.testing.assert_array_equal(params["img/Transformer/encoder_norm/scale"], 1.0)
    np.testing.assert_array_equal(params["llm/final_norm/scale"], 0.0)  # Gemma's RMSNorm multiplies by 1 + scale
    again = flatten(init_params(tiny_cfg, jax.random.key(3)))  # a typed key holds the same words
    assert all(np.array_equal(again[k], params[k]) for k in shapes)
    traced = flatten(jax.jit(lambda k: init_params(tiny_cfg, k))(key))  # finetune --random-init draws in a jit
    for k in shapes:
        np.testing.assert_allclose(traced[k], params[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size, res", [("mini", 112), ("tiny", 224), ("3B", 224), ("3B", 448), ("28B", 448)])
def test_local_layers_see_what_global_layers_see_iff_the_sequence_fits_the_window(size, res):
    """HF's 4096 window never hides the image at 112-448 px; the tiny test model's 16-token one does."""
    cfg = get_config(size, res)
    t = cfg.num_image_tokens + 64 + 64  # the image, a 64-token prompt and a 64-token answer
    masks = training_masks(cfg.text, jnp.asarray([[0] * (t - 64) + [1] * 64]), jnp.ones((1, t), jnp.int32))
    same = bool(np.array_equal(np.asarray(masks.new_local), np.asarray(masks.new_full)))
    assert same == (t <= cfg.text.sliding_window)


def test_image_tokens_per_resolution():
    assert [get_config("3B", r).num_image_tokens for r in (224, 448, 896)] == [256, 1024, 4096]


def test_step_is_prefill_then_decode(tiny_cfg, tiny_params):
    """`paligemma.step` (one function of the chunk length, writing its cache in place) equals `prefill` from an
    empty cache and `decode_step` for one token, past the sliding window, and touches only its own slots."""
    from pg2edge.model import paligemma
    from pg2edge.model.gemma2 import init_cache, write_cache

    rs = np.random.RandomState(0)
    n_img = tiny_cfg.num_image_tokens
    img = jnp.asarray(rs.normal(size=(1, n_img, tiny_cfg.text.width)).astype(np.float32))
    toks = jnp.asarray(rs.randint(0, 300, size=(1, 5)).astype(np.int32))
    valid = jnp.array([n_img + 5], jnp.int32)
    ref_logits, ref_chunk = paligemma.prefill(tiny_params, tiny_cfg, paligemma.prompt_embeddings(
        tiny_params, tiny_cfg, img, toks), valid)
    junk = init_cache(tiny_cfg.text, 1, 64)
    junk = junk._replace(k=tuple(c + 7.0 for c in junk.k), v=tuple(c - 7.0 for c in junk.v))  # stale slots
    logits, cache = paligemma.step(tiny_params, tiny_cfg, img, toks, jnp.array([0]), junk)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    ref_cache = write_cache(junk, ref_chunk, jnp.array([0]))
    for got, want in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
        np.testing.assert_allclose(got, want, atol=1e-5)
    for pos in range(int(valid[0]), int(valid[0]) + 20):
        tok = jnp.array([pos % 50 + 3], jnp.int32)
        ref_logits, ref_chunk = paligemma.decode_step(tiny_params, tiny_cfg, tok, jnp.array([pos]), cache)
        logits, cache = paligemma.step(tiny_params, tiny_cfg, img[:, :0], tok[:, None], jnp.array([pos]), cache)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        np.testing.assert_allclose(cache.v[-1][:, :, pos:pos + 1], ref_chunk.v[-1], atol=1e-5)
    assert pos > 2 * tiny_cfg.text.sliding_window
