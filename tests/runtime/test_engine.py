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


@pytest.mark.parametrize("backend", ["onnx"])
def test_float_bundle_matches_jax_generate(make_bundle, tiny_checkpoint, image_file, backend):
    engine = Engine(make_bundle("f32", (backend,)), backend=backend)
    streamed = []
    result = engine.generate(image_file, PROMPT, max_new_tokens=32, on_token=lambda t, s: streamed.append(t))
    ref = _reference(tiny_checkpoint, engine, image_file, PROMPT, 32)
    assert result.tokens == ref.tokens[0]
    assert streamed == result.tokens
    assert result.stop_reason == ref.stop_reasons[0]
    assert result.timings.decode_tokens == len(result.tokens) - 1 or result.stop_reason == "eos"


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
    with pytest.raises(PromptError, match="largest prefill bucket"):
        engine.generate(image_file, "caption " + "red " * 40)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(image_file.read_bytes()[:200])
    results = engine.generate_many([image_file, bad], PROMPT, max_new_tokens=2)
    assert not isinstance(results[0], Exception) and isinstance(results[1], Exception)
    assert "truncated.png" in str(results[1])


def test_tampered_or_unsupported_bundle_is_refused(make_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(make_bundle("f32"), copy)
    with open(copy / "onnx" / "decode.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="decode.onnx: checksum mismatch"):
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
