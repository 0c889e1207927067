"""The runtime reproduces `pg2edge.model.generate` token for token, and fails cleanly on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pg2edge.checkpoint import load_checkpoint
from pg2edge.model import generate
from pg2edge.param_layout import unflatten
from pg2edge.runtime.engine import Engine, PromptError
from pg2edge.runtime.manifest import BundleError
from pg2edge.sampling import SamplingConfig

from .conftest import MAX_LEN

PROMPT = "caption en"


def _reference(tiny_checkpoint, engine, image_file, prompt, n, sampling=SamplingConfig()):
    cfg, flat = load_checkpoint(tiny_checkpoint)
    pixels, _ = engine.pixels(image_file)
    ids = engine.prompt_ids(prompt)
    return generate(unflatten(flat), cfg, pixels, [ids], max_new_tokens=n, max_len=MAX_LEN, sampling=sampling)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_float_bundle_matches_jax_generate(make_bundle, tiny_checkpoint, image_file, backend):
    engine = Engine(make_bundle("f32", ("onnx", "tflite")), backend=backend)
    streamed = []
    result = engine.generate(image_file, PROMPT, max_new_tokens=32, on_token=lambda t, s: streamed.append(t))
    ref = _reference(tiny_checkpoint, engine, image_file, PROMPT, 32)
    assert result.tokens == ref.tokens[0]
    assert streamed == result.tokens
    assert result.stop_reason == ref.stop_reasons[0]
    assert result.timings.decode_tokens == len(result.tokens) - 1 or result.stop_reason == "eos"


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_score_gives_the_jax_logits_at_every_teacher_forced_step(make_bundle, tiny_checkpoint, image_file, backend):
    engine = Engine(make_bundle("f32", ("onnx", "tflite")), backend=backend)
    ref = _reference(tiny_checkpoint, engine, image_file, PROMPT, 12)
    forced = [7, 300, 5, 1999, 42, 8, 8, 1024, 3, 60, 61, 62]  # not the greedy path: every step is exercised
    ref_forced = _reference_forced(tiny_checkpoint, engine, image_file, PROMPT, forced)
    logits = engine.score(image_file, PROMPT, forced)
    assert logits.shape == (len(forced), ref.logits.shape[-1])
    np.testing.assert_allclose(logits, ref_forced, atol=1e-3 if backend == "tflite" else 1e-4, rtol=1e-3)
    np.testing.assert_allclose(engine.score(image_file, PROMPT, ref.tokens[0])[0], ref.logits[0, 0],
                               atol=1e-3, rtol=1e-3)


def _reference_forced(tiny_checkpoint, engine, image_file, prompt, forced):
    """JAX logits before each forced token: prefill, then decode steps fed `forced[:-1]`."""
    import jax.numpy as jnp

    from pg2edge.model.generate import _decode, _prefill, pad_prompts

    cfg, flat = load_checkpoint(tiny_checkpoint)
    params = unflatten(flat)
    pixels, _ = engine.pixels(image_file)
    ids, lens = pad_prompts([engine.prompt_ids(prompt)])
    logits, cache = _prefill(params, cfg, jnp.asarray(pixels), jnp.asarray(ids), jnp.asarray(lens), MAX_LEN)
    rows, pos = [np.asarray(logits[0])], cfg.num_image_tokens + int(lens[0])
    for tok in forced[:-1]:
        logits, cache = _decode(params, cfg, jnp.asarray([tok], jnp.int32), jnp.asarray([pos], jnp.int32), cache)
        rows.append(np.asarray(logits[0]))
        pos += 1
    return np.stack(rows)


def test_sampling_matches_jax_with_the_same_seed(make_bundle, tiny_checkpoint, image_file):
    engine = Engine(make_bundle("f32"))
    s = SamplingConfig(temperature=0.8, top_k=40, top_p=0.95, seed=11)
    result = engine.generate(image_file, PROMPT, max_new_tokens=16, sampling=s)
    ref = _reference(tiny_checkpoint, engine, image_file, PROMPT, 16, sampling=s)
    assert result.tokens == ref.tokens[0]


def test_stops_at_cache_capacity(make_bundle, image_file):
    engine = Engine(make_bundle("f32"))
    result = engine.generate(image_file, PROMPT, max_new_tokens=500)
    assert result.stop_reason in ("cache_full", "eos")
    if result.stop_reason == "cache_full":
        assert engine.num_image_tokens + len(engine.prompt_ids(PROMPT)) + len(result.tokens) == MAX_LEN + 1


def test_bad_inputs_raise_typed_errors(make_bundle, image_file, tmp_path):
    bundle = make_bundle("f32")
    engine = Engine(bundle)
    with pytest.raises(PromptError, match="empty prompt"):
        engine.generate(image_file, "   ")
    with pytest.raises(PromptError, match="the cache of .* holds 79"):  # 96 slots - 16 image tokens - 1
        engine.generate(image_file, "caption " + "red " * 100)
    with pytest.raises(PromptError, match="largest prefill bucket of .* holds 24"):  # TFLite: static buckets
        Engine(make_bundle("f32", ("tflite",)), backend="tflite").generate(image_file, "caption " + "red " * 40)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(image_file.read_bytes()[:200])
    results = engine.generate_many([image_file, bad], PROMPT, max_new_tokens=2)
    assert not isinstance(results[0], Exception) and isinstance(results[1], Exception)
    assert "truncated.png" in str(results[1])


def test_tampered_or_unsupported_bundle_is_refused(make_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(make_bundle("f32"), copy)
    with open(copy / "onnx" / "step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="step.onnx: checksum mismatch"):
        Engine(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        Engine(copy)


def test_cli_run_json_and_errors(make_bundle, image_file, tmp_path):
    exe = [sys.executable, "-m", "pg2edge.cli"]
    bundle = str(make_bundle("f32"))
    ok = subprocess.run(exe + ["run", bundle, "--image", str(image_file), "--prompt", PROMPT, "--json",
                               "--max-new-tokens", "4"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert len(out["tokens"]) <= 4 and out["timings"]["vision_ms"] > 0
    bad = subprocess.run(exe + ["run", bundle, "--image", str(tmp_path / "missing.png"), "--prompt", PROMPT],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.png" in bad.stderr and "Traceback" not in bad.stderr


def test_runtime_imports_no_heavy_framework(make_bundle, image_file):
    code = (
        "import sys\n"
        "from pg2edge.runtime.engine import Engine\n"
        f"r = Engine({str(make_bundle('f32'))!r}).generate({str(image_file)!r}, 'detect cat', max_new_tokens=3)\n"
        "bad = [m for m in ('jax', 'flax', 'tensorflow', 'torch', 'onnx') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("quant, backend", [("int8", "onnx"), ("int4", "onnx"), ("mixed", "onnx"),
                                            ("int8", "tflite")])
def test_quantized_bundle_matches_its_fake_quant_reference(make_bundle, tiny_checkpoint, image_file, quant, backend):
    from pg2edge.quantize.recipes import fake_quant_params, get_recipe

    # ONNX at accuracy level 0 (float activations) is exact vs the reference
    engine = Engine(make_bundle(quant, (backend,), accuracy_level=0), backend=backend)
    result = engine.generate(image_file, PROMPT, max_new_tokens=24)
    cfg, flat = load_checkpoint(tiny_checkpoint)
    ref_params = unflatten(fake_quant_params(flat, get_recipe(quant, 32)))
    pixels, _ = engine.pixels(image_file)
    ref = generate(ref_params, cfg, pixels, [engine.prompt_ids(PROMPT)], max_new_tokens=24, max_len=MAX_LEN)
    assert result.tokens == ref.tokens[0]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_int4_fast_kernels_track_the_reference(make_bundle, tiny_checkpoint, image_file, backend):
    """ONNX accuracy level 4 and LiteRT's block-wise int4 kernel quantize activations to int8 too:
    first-token logits stay close to the fake-quant reference, not exact."""
    from pg2edge.quantize.recipes import fake_quant_params, get_recipe

    engine = Engine(make_bundle("int4", (backend,)), backend=backend)
    first = engine.score(image_file, PROMPT, [0])[0]  # the prompt's logits
    cfg, flat = load_checkpoint(tiny_checkpoint)
    ref_params = unflatten(fake_quant_params(flat, get_recipe("int4", 32)))
    pixels, _ = engine.pixels(image_file)
    ref = generate(ref_params, cfg, pixels, [engine.prompt_ids(PROMPT)], max_new_tokens=1, max_len=MAX_LEN)
    a, b = first, ref.logits[0, 0]
    assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.995
    assert int(a.argmax()) == int(b.argmax())


def test_segmentation_masks_come_from_the_vae_part(make_bundle, vae_file, image_file, tmp_path):
    import jax.numpy as jnp

    from pg2edge.checkpoint.vae import load_vae
    from pg2edge.model.vqvae import decode_masks
    from pg2edge.postprocess import paste_mask
    from pg2edge.runtime.draw import draw_objects

    engine = Engine(make_bundle("f32", vae=True))
    codes = list(range(3, 19))
    text = "<loc0100><loc0200><loc0800><loc0900> " + "".join(f"<seg{c:03d}>" for c in codes) + " cat"
    size = (120, 90)
    (obj,) = engine.parse(text, size)
    assert obj.label == "cat" and obj.seg_codes == tuple(codes)
    ref64 = np.asarray(decode_masks(load_vae(vae_file), jnp.asarray([codes], jnp.int32)))[0]
    np.testing.assert_array_equal(obj.mask, paste_mask(ref64, obj.box, size))
    out = draw_objects(image_file, [obj], tmp_path / "drawn.png")
    from PIL import Image

    assert Image.open(out).size == size


def test_missing_backend_package_is_one_line(make_bundle, image_file):
    """Without onnxruntime installed the CLI says which package to install, exit 2."""
    code = (
        "import sys\n"
        "sys.modules['onnxruntime'] = None  # as if not installed\n"
        "from pg2edge.cli import main\n"
        f"main(['run', {str(make_bundle('f32'))!r}, '--image', {str(image_file)!r}, '--prompt', 'caption en',"
        " '--backend', 'onnx'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: backend onnx needs the onnxruntime package (pip install onnxruntime)"


def test_cli_draw_writes_the_annotated_image(make_bundle, image_file, tmp_path):
    out = tmp_path / "drawn.png"
    r = subprocess.run([sys.executable, "-m", "pg2edge.cli", "run", str(make_bundle("f32")), "--image",
                        str(image_file), "--prompt", "detect cat", "--max-new-tokens", "8", "--draw", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(out).size == Image.open(image_file).size


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_low_memory_mode_gives_the_same_tokens_and_holds_no_part(make_bundle, image_file, backend):
    bundle = make_bundle("f32", ("onnx", "tflite"))
    usual = Engine(bundle, backend=backend).generate(image_file, PROMPT, max_new_tokens=12)
    lean = Engine(bundle, backend=backend, low_memory=True)
    for _ in range(2):  # parts reload for every generation
        assert lean.generate(image_file, PROMPT, max_new_tokens=12).tokens == usual.tokens
        held = lean.backend._sessions if backend == "onnx" else lean.backend._interpreters
        assert not held and lean._decoder is None
