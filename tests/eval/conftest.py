"""One tiny suite, one random tiny-56 checkpoint and its f32 ONNX bundle, and the CLI run on both (once)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pg2edge.tasks import SuiteConfig, write_suite

MAX_NEW_TOKENS = 8


@pytest.fixture(scope="session")
def suite_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-suite") / "suite"
    write_suite(out, SuiteConfig(n=8, res=56))
    return out


@pytest.fixture(scope="session")
def f32_bundle(tiny_checkpoint, tmp_path_factory):
    from pg2edge.export.convert import ConvertOptions, convert

    out = tmp_path_factory.mktemp("eval-bundle") / "tiny-f32"
    convert(ConvertOptions(size="tiny", res=56, out=out, checkpoint=tiny_checkpoint, quant="f32",
                           max_len=96, prefill=(16,)))
    return out


@pytest.fixture(scope="session")
def cli_runs(suite_dir, tiny_checkpoint, f32_bundle, tmp_path_factory):
    """`pg2edge eval` on the checkpoint (JAX) and on the bundle (ONNX): result, metrics JSON, predictions."""
    from pg2edge.cli import main

    out = tmp_path_factory.mktemp("eval-out")
    runs = {}
    for name, target in (("jax", tiny_checkpoint), ("onnx", f32_bundle)):
        args = ["eval", str(target), "--data", str(suite_dir / "train.jsonl"), "--batch", "4",
                "--max-new-tokens", str(MAX_NEW_TOKENS), "--json", str(out / f"{name}.json"),
                "--predictions", str(out / f"{name}.jsonl")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / f"{name}.json").read_text())
        predictions = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        runs[name] = (result, metrics, predictions)
    return runs
