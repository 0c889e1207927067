"""The split parts, driven like the runtime drives them (numpy cache, in-place writes), equal `generate`."""

from __future__ import annotations

import numpy as np

from pg2edge.export.split import SplitConfig, split_model
from pg2edge.model import generate


def run_parts(parts, params, pixels, prompt, max_new_tokens, split):
    """The runtime's loop over the parts, in numpy around the traced functions."""
    vision, prefill, decode = parts[0], parts[1], parts[-1]
    (img,) = vision.fn(params, pixels)
    text_len = prefill.inputs[1].shape[1]
    tokens = np.zeros((1, text_len), np.int32)
    tokens[0, :len(prompt)] = prompt
    n_img = img.shape[1]
    valid = np.array([n_img + len(prompt)], np.int32)
    logits, *chunk = prefill.fn(params, img, tokens, valid)
    cache = [spec.zeros() for spec in decode.inputs[2:]]
    for buf, new in zip(cache, chunk):
        buf[:, :, :new.shape[2]] = np.asarray(new)
    out, pos = [], int(valid[0])
    for _ in range(max_new_tokens):
        tok = int(np.argmax(logits[0]))
        out.append(tok)
        logits, *chunk = decode.fn(params, np.array([tok], np.int32), np.array([pos], np.int32), *cache)
        for buf, new in zip(cache, chunk):
            buf[:, :, pos:pos + 1] = np.asarray(new)
        pos += 1
    return out


def test_split_parts_reproduce_generate(tiny_cfg, tiny_params, tiny_pixels):
    split = SplitConfig(max_len=64, prefill_lens=(8,))
    parts = split_model(tiny_cfg, split)
    assert [p.name for p in parts] == ["vision", "prefill_8", "decode"]
    prompt = [2, 300, 301, 302, 108]
    ours = run_parts(parts, tiny_params, tiny_pixels[:1], prompt, 20, split)
    ref = generate(tiny_params, tiny_cfg, tiny_pixels[:1], [prompt], max_new_tokens=20, max_len=64)
    assert ours == ref.tokens[0]
