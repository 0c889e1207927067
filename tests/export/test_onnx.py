"""ONNX parts (DESIGN §6 rung 3): each float part matches `part.fn`, and the greedy loop matches `generate`."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from part_feeds import random_feeds

from pg2edge.export.onnx_export import export_parts
from pg2edge.export.split import SplitConfig, split_model
from pg2edge.model import generate

SPLIT = SplitConfig(max_len=64, prefill_lens=(8,))
PROMPT = [2, 300, 301, 302, 108]


@pytest.fixture(scope="module")
def float_parts(tiny_cfg, tiny_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_f32")
    parts = split_model(tiny_cfg, SPLIT)
    infos = export_parts(parts, tiny_params, out)
    sessions = {name: ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
                for name, info in infos.items()}
    return parts, sessions, infos


def test_norms_gelu_and_softmax_are_single_standard_operators(float_parts, tiny_cfg):
    """The model's named calls lower to one node each, not the dozen elementwise nodes inside them."""
    import onnx

    from pg2edge.export.onnx_export import op_histogram

    _, _, infos = float_parts
    decode = op_histogram(onnx.load(str(infos["decode"].path), load_external_data=False))
    vision = op_histogram(onnx.load(str(infos["vision"].path), load_external_data=False))
    depth = tiny_cfg.text.depth
    assert decode.get("RMSNormalization") == 4 * depth + 1 and decode.get("Softmax") == depth
    assert decode.get("Gelu") == depth and "Sqrt" not in decode and "Reciprocal" not in decode
    assert vision.get("LayerNormalization") == 2 * tiny_cfg.vision.depth + 1
    assert vision.get("Gelu") == tiny_cfg.vision.depth and "ReduceMean" not in vision


def test_each_float_part_matches_jax(float_parts, tiny_params):
    parts, sessions, _ = float_parts
    rs = np.random.RandomState(0)
    for part in parts:
        feeds = random_feeds(part, rs)
        if part.name.startswith("prefill"):
            feeds["valid_len"] = np.array([16 + 6], np.int32)
        ref = part.fn(tiny_params, *feeds.values())
        got = sessions[part.name].run([s.name for s in part.outputs], feeds)
        for spec, r, o in zip(part.outputs, ref, got):
            np.testing.assert_allclose(o, np.asarray(r), atol=1e-4, rtol=1e-4, err_msg=f"{part.name}:{spec.name}")


def test_float_greedy_stream_equals_generate(float_parts, tiny_cfg, tiny_params, tiny_pixels):
    parts, sessions, _ = float_parts
    vision, prefill, decode = parts
    (img,) = sessions["vision"].run(None, {"pixels": tiny_pixels[:1]})
    tokens = np.zeros((1, 8), np.int32)
    tokens[0, :len(PROMPT)] = PROMPT
    valid = np.array([img.shape[1] + len(PROMPT)], np.int32)
    logits, *chunk = sessions[prefill.name].run(None, {"image_embeds": img, "tokens": tokens, "valid_len": valid})
    cache = [spec.zeros() for spec in decode.inputs[2:]]
    for buf, new in zip(cache, chunk):
        buf[:, :, :new.shape[2]] = new
    names = [s.name for s in decode.inputs[2:]]
    out, pos, all_logits = [], int(valid[0]), []
    for _ in range(32):
        all_logits.append(logits[0])
        out.append(int(np.argmax(logits[0])))
        feeds = {"token": np.array([out[-1]], np.int32), "pos": np.array([pos], np.int32), **dict(zip(names, cache))}
        logits, *chunk = sessions["decode"].run(None, feeds)
        for buf, new in zip(cache, chunk):
            buf[:, :, pos:pos + 1] = new
        pos += 1
    ref = generate(tiny_params, tiny_cfg, tiny_pixels[:1], [PROMPT], max_new_tokens=32, max_len=SPLIT.max_len)
    assert out == ref.tokens[0]
    np.testing.assert_allclose(np.stack(all_logits), ref.logits[0], atol=1e-4, rtol=1e-4)


def test_step_graph_runs_prompt_and_decode_with_one_session(tiny_cfg, tiny_params, tiny_pixels, tmp_path):
    """The symbolic-length `step` graph: the unpadded prompt (m = image tokens) and then every decode
    step (m = 0, t = 1) in one session reproduce `generate`'s greedy stream and logits. Each layer's
    attention is one GroupQueryAttention writing into the cache buffer bound as both its input and its
    `present_*` output; stale slots beyond the written ones are never read."""
    import onnx

    from pg2edge.export.split import step_part

    part = step_part(tiny_cfg, SPLIT)
    infos = export_parts([split_model(tiny_cfg, SPLIT)[0], part], tiny_params, tmp_path)
    model = onnx.load(str(infos["step"].path), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim]
    assert dims == [1, "t"]
    assert infos["step"].ops["GroupQueryAttention"] == tiny_cfg.text.depth
    assert "Softmax" not in infos["step"].ops
    vision = ort.InferenceSession(str(infos["vision"].path), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(infos["step"].path), providers=["CPUExecutionProvider"])
    (img,) = vision.run(None, {"pixels": tiny_pixels[:1]})
    caches = {s.name: np.full(s.shape, 7.0, np.float32) for s in part.inputs[3:]}  # stale junk everywhere
    logits_buf = np.zeros((1, tiny_cfg.text.vocab_size), np.float32)

    def run(image_embeds, tokens, pos):
        binding, keep = step.io_binding(), []
        feeds = {"image_embeds": np.ascontiguousarray(image_embeds), "tokens": np.array([tokens], np.int32),
                 "pos": np.array([pos], np.int32), **caches}
        for name, arr in feeds.items():
            keep.append(ort.OrtValue.ortvalue_from_numpy(arr))
            binding.bind_ortvalue_input(name, keep[-1])
        for name, arr in {"logits": logits_buf, **{f"present_{n}": c for n, c in caches.items()}}.items():
            binding.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        step.run_with_iobinding(binding)
        return logits_buf[0].copy()

    logits, pos = run(img, PROMPT, 0), img.shape[1] + len(PROMPT)
    out, all_logits = [], []
    for _ in range(32):
        all_logits.append(logits)
        out.append(int(np.argmax(logits)))
        logits, pos = run(img[:, :0], [out[-1]], pos), pos + 1
    ref = generate(tiny_params, tiny_cfg, tiny_pixels[:1], [PROMPT], max_new_tokens=32, max_len=SPLIT.max_len)
    assert out == ref.tokens[0]
    np.testing.assert_allclose(np.stack(all_logits), ref.logits[0], atol=1e-4, rtol=1e-4)
    assert (caches["k_0"][:, :, pos:] == 7.0).all()  # written in place, only at the chunks' slots
    assert pos > 2 * tiny_cfg.text.sliding_window  # local layers' window was exercised
