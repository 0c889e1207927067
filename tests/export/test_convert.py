"""`pg2edge convert`: a verified bundle on success; one line, exit 2 and nothing at --out on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pg2edge.runtime.manifest import read_manifest


def _convert(*args):
    return subprocess.run([sys.executable, "-m", "pg2edge.cli", "convert", *args], capture_output=True, text=True)


def test_bundle_has_manifest_with_checksums_and_io(tmp_path):
    out = tmp_path / "bundle"
    r = _convert("--size", "tiny", "--random-init", "--quant", "int4", "--max-len", "64", "--prefill", "8,24",
                 "--out", str(out), "--report")
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)  # verifies every sha256
    assert m["weights"] == {"source": "random-init", "random_init": True, "seed": 0}
    assert set(m["backends"]["onnx"]) == {"vision", "step"}  # one graph of symbolic length: prompt and decode
    assert m["parts"]["step"]["inputs"][1] == {"name": "tokens", "shape": [1, "t"], "dtype": "int32"}
    assert m["parts"]["step"]["outputs"][1] == {"name": "present_k_0", "shape": [1, 2, 64, 16], "dtype": "float32"}
    assert "weights.onnx.data" in " ".join(m["files"]) and "tokenizer.model" in m["files"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    report = json.loads((out / "quant_report.json").read_text())
    rows = report if isinstance(report, list) else report["rows"]
    decoder = [r for r in rows if r["name"].startswith("llm/layers/")]
    assert decoder and all(r["scheme"].startswith("int4") and 0 < r["rel_error"] < 0.2 for r in decoder)
    # output error on the calibration batch: every quantized matmul weight the parts multiply by
    measured = {r["name"]: r["output_rel_error"] for r in rows if "output_rel_error" in r}
    assert set(measured) == {r["name"] for r in rows if r["scheme"] != "f32"}
    assert all(0 < e < 0.5 for e in measured.values())
    assert "output_rel_error" in (out / "quant_report.md").read_text().splitlines()[0]
    assert m["quant"]["int4_clip"] == "mse" and all(r["scheme"].endswith("-mse") for r in decoder)
    again = _convert("--size", "tiny", "--random-init", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    forced = _convert("--size", "tiny", "--random-init", "--max-len", "64", "--prefill", "8", "--out", str(out),
                      "--force")
    assert forced.returncode == 0 and json.loads((out / "manifest.json").read_text())["sequence"]["max_len"] == 64


def test_int4_clip_max_is_the_plain_scale_and_never_closer(tmp_path):
    errors = {}
    for clip in ("max", "mse"):
        out = tmp_path / clip
        r = _convert("--size", "tiny", "--random-init", "--quant", "int4", "--int4-clip", clip, "--max-len", "64",
                     "--prefill", "8", "--out", str(out), "--report")
        assert r.returncode == 0, r.stderr
        assert read_manifest(out)["quant"]["int4_clip"] == clip
        rows = json.loads((out / "quant_report.json").read_text())
        rows = rows if isinstance(rows, list) else rows["rows"]
        errors[clip] = {r["name"]: (r["scheme"], r["rel_error"]) for r in rows if r["scheme"].startswith("int4")}
    assert set(errors["max"]) == set(errors["mse"]) and errors["max"]
    for name, (scheme, err) in errors["max"].items():
        searched_scheme, searched = errors["mse"][name]
        assert scheme + "-mse" == searched_scheme and searched <= err, name  # alpha = 1 is one of the candidates


@pytest.mark.parametrize("args, message", [
    (["--size", "5B", "--random-init"], "unknown size '5B'"),
    (["--size", "3B", "--res", "300", "--random-init"], "unknown resolution 300"),
    (["--size", "tiny", "--random-init", "--quant", "int3"], "unknown quant 'int3'"),
    (["--size", "tiny", "--random-init", "--block", "128"], "--block 128 does not divide the text width (64)"),
    (["--size", "tiny", "--random-init", "--max-len", "64", "--prefill", "48"], "must be < --max-len 64"),
    (["--size", "tiny", "--random-init", "--format", "coreml"], "unknown format coreml"),
    (["--size", "tiny"], "exactly one of --checkpoint PATH or --random-init"),
    (["--size", "tiny", "--random-init", "--quant", "f32", "--gptq", "4"], "--gptq chooses quantized codes"),
    (["--size", "3B", "--random-init", "--gptq", "4"], "over the 4 GiB calibration limit; convert without --gptq"),
])
def test_bad_options_fail_in_one_line(tmp_path, args, message):
    out = tmp_path / "out"
    r = _convert(*args, "--out", str(out))
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_corrupt_checkpoint_leaves_nothing(tmp_path):
    ckpt = tmp_path / "bad.npz"
    ckpt.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "out"
    r = _convert("--size", "tiny", "--checkpoint", str(ckpt), "--out", str(out))
    assert r.returncode == 2 and "bad.npz" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_finetune_output_dir_converts_with_its_tokenizer_and_config(tmp_path):
    """`pg2edge convert --checkpoint DIR` takes a `pg2edge finetune` output directory as it is."""
    from pg2edge.runtime.engine import Engine
    from pg2edge.tasks import SuiteConfig, write_suite
    from pg2edge.train import TrainOptions, finetune

    write_suite(tmp_path / "suite", SuiteConfig(n=6, seed=0, res=56))
    run = tmp_path / "run"
    finetune(TrainOptions(data=tmp_path / "suite" / "train.jsonl", out=run, steps=2, batch=2, size="tiny", res=56,
                          random_init=True, save_every=2), progress=False)
    out = tmp_path / "bundle"
    r = _convert("--size", "tiny", "--checkpoint", str(run), "--quant", "f32", "--max-len", "64", "--prefill", "24",
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "tokenizer.model").read_bytes() == (run / "tokenizer.model").read_bytes()
    assert Engine(out).manifest["weights"]["source"].endswith("params.npz")


def test_killed_convert_leaves_nothing(tmp_path):
    """SIGTERM mid-conversion unwinds like an error: no --out and no staging directory."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pg2edge.cli", "convert", "--size", "tiny", "--random-init",
                             "--format", "onnx,tflite", "--max-len", "64", "--prefill", "8", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "convert ended before staging"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    assert code == 128 + signal.SIGTERM, proc.stderr.read()[-2000:]
    assert not out.exists() and not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_tflite_files_converted_in_child_processes_are_the_same(tmp_path, monkeypatch):
    """Full-size models convert each TFLite file in a fresh process: same bytes as in-process."""
    from pg2edge.export import tflite_bundle
    from pg2edge.export.convert import ConvertOptions, convert

    def bundle(name):
        out = tmp_path / name
        convert(ConvertOptions(size="tiny", out=out, random_init=True, formats=("tflite",), quant="int8",
                               max_len=64, prefill=(8,)))
        return {k: v for k, v in read_manifest(out)["files"].items() if k.startswith("tflite/")}

    here = bundle("in_process")
    monkeypatch.setattr(tflite_bundle, "ISOLATE_ABOVE_BYTES", 0)
    assert bundle("isolated") == here and len(here) == 3


def test_unknown_int4_clip_is_a_config_error(tmp_path):
    from pg2edge.config import ConfigError
    from pg2edge.export.convert import ConvertOptions

    with pytest.raises(ConfigError, match=r"^int4 clip 'l1': expected one of max, mse$"):
        ConvertOptions(size="tiny", random_init=True, int4_clip="l1", out=tmp_path / "b").validate()
    assert not (tmp_path / "b").exists()


def test_gptq_codes_move_the_calibration_outputs_less_and_the_manifest_says_so(tmp_path):
    """Same format and scales as round-to-nearest; the report's output error (on its own calibration batch, not
    GPTQ's examples) drops for the decoder weights GPTQ covers; the tied table is left round-to-nearest."""
    reports = {}
    for name, extra in (("nearest", []), ("gptq", ["--gptq", "6"])):
        out = tmp_path / name
        r = _convert("--size", "tiny", "--random-init", "--quant", "int4", "--max-len", "64", "--prefill", "8",
                     "--out", str(out), "--report", *extra)
        assert r.returncode == 0, r.stderr
        rows = json.loads((out / "quant_report.json").read_text())
        reports[name] = {r["name"]: r for r in (rows if isinstance(rows, list) else rows["rows"])}
        gptq = read_manifest(out)["quant"]["gptq"]
        assert gptq == (None if name == "nearest" else {"calibration_images": 6, "calibration_seed": 1234})
    near, cal = reports["nearest"], reports["gptq"]
    covered = ("llm/layers/mlp/gating_einsum", "llm/layers/mlp/linear", "llm/layers/attn/q_einsum/w",
               "llm/layers/attn/kv_einsum/w", "llm/layers/attn/attn_vec_einsum/w",  # an einsum over two K dims
               "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel")
    for key in covered:
        assert cal[key]["scheme"] == near[key]["scheme"] and cal[key]["quant_bytes"] == near[key]["quant_bytes"]
        assert cal[key]["output_rel_error"] < 0.9 * near[key]["output_rel_error"], key
        assert cal[key]["rel_error"] > near[key]["rel_error"], key  # it trades weight error for output error
    table = "llm/embedder/input_embedding"
    assert cal[table]["rel_error"] == near[table]["rel_error"]
