"""DESIGN §6 rung 1: pg2edge.model == transformers' PaliGemma on the same tiny HF checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pg2edge.checkpoint import load_checkpoint, random_params, write_hf  # noqa: E402
from pg2edge.config import get_config  # noqa: E402
from pg2edge.model import generate  # noqa: E402
from pg2edge.param_layout import unflatten  # noqa: E402

STEPS = 16


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    cfg = get_config("tiny")
    path = tmp_path_factory.mktemp("hf") / "ckpt"
    write_hf(path, random_params(cfg, seed=3, scale=0.1), cfg)
    return cfg, path


def _hf_generate(path, cfg, pixels, prompt):
    model = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32).eval()
    ids = torch.tensor([[cfg.text.vocab_size] * cfg.num_image_tokens + prompt])  # <image> placeholders
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             token_type_ids=torch.zeros_like(ids),
                             pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()),
                             max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    V = cfg.text.vocab_size
    logits = np.stack([step[0, :V].numpy() for step in out.logits])
    return out.sequences[0, ids.shape[1]:].tolist(), logits


@pytest.mark.parametrize("prompt_len", [6, 30])  # 30: the prompt alone exceeds the sliding window (16)
def test_prefill_and_greedy_decode_match_transformers(hf_checkpoint, prompt_len):
    cfg_hint, path = hf_checkpoint
    cfg, flat = load_checkpoint(path)
    assert cfg.name == cfg_hint.name
    rs = np.random.RandomState(prompt_len)
    pixels = rs.uniform(-1, 1, (1, cfg.resolution, cfg.resolution, 3)).astype(np.float32)
    prompt = [2] + rs.randint(200, 800, prompt_len - 2).tolist() + [108]
    hf_tokens, hf_logits = _hf_generate(path, cfg, pixels, prompt)
    ours = generate(unflatten(flat), cfg, pixels, [prompt], max_new_tokens=STEPS, max_len=128, eos_id=-1)
    np.testing.assert_allclose(ours.logits[0, 0], hf_logits[0], atol=1e-4, rtol=1e-4)  # image + prefix prefill
    assert ours.tokens[0] == hf_tokens
    np.testing.assert_allclose(ours.logits[0], hf_logits, atol=1e-4, rtol=1e-4)
