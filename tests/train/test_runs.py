"""Training runs end to end: the loss falls, LoRA + QAT + bf16 keeps the base frozen, the CLI reports bad data."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from pg2edge.checkpoint import load_checkpoint
from pg2edge.cli import main
from pg2edge.train import read_metrics
from pg2edge.train.lora import TARGETS

from .helpers import losses, replace, run, write_jsonl


def test_loss_goes_down_on_a_small_repeated_batch(base_opts, data_dir):
    opts = replace(base_opts, data=data_dir / "small.jsonl", steps=30, lr=2e-3, warmup=0.1)
    result = run(opts)
    curve = losses(opts.out)
    assert sorted(curve) == list(range(1, 31))
    assert np.mean([curve[s] for s in (28, 29, 30)]) < 0.4 * curve[1]
    assert result.last["token_acc"] > 0.5 and result.steps_per_s > 0


def test_lora_qat_bf16_trains_adapters_only(base_opts, source_ckpt):
    import ml_dtypes

    opts = replace(base_opts, trainable="lora", lora_rank=4, qat="int4", dtype="bf16", lr=1e-2)
    result = run(opts)
    assert np.isfinite(result.last["loss"])
    _, params = load_checkpoint(opts.out / "params.npz")
    _, source = load_checkpoint(source_ckpt)
    for name, w in params.items():
        assert w.dtype == ml_dtypes.bfloat16, name
        base = source[name].astype(ml_dtypes.bfloat16)
        if name in TARGETS:
            assert not np.array_equal(w, base), name  # adapters merged in
        else:
            np.testing.assert_array_equal(w, base, err_msg=name)


def test_qat_distillation_starts_at_zero_kl_without_fake_quant_and_learns_with_it(base_opts, tmp_path):
    """--distill 1: the loss is KL to the --checkpoint model; 0 at step 1 unless QAT changes the student,
    and QAT through int4 pulls it down."""
    plain = run(replace(base_opts, distill=1.0, steps=1, out=tmp_path / "plain"))
    assert abs(plain.last["loss"]) < 1e-6
    opts = replace(base_opts, distill=1.0, qat="int4", steps=12, lr=1e-4, out=tmp_path / "qat")
    run(opts)
    curve = losses(opts.out)
    assert curve[1] > 1e-4 and np.mean([curve[s] for s in (10, 11, 12)]) < 0.5 * curve[1]


def test_cli_bad_line_is_one_error_line(base_opts, data_dir, tmp_path):
    rows = [{"image": "images/red_square.png", "prefix": "caption en", "suffix": "a red square"},
            {"image": "images/absent.png", "prefix": "caption en", "suffix": "x"}]
    bad = write_jsonl(data_dir / "bad.jsonl", rows)
    args = ["finetune", "--checkpoint", str(base_opts.checkpoint), "--data", str(bad), "--steps", "1",
            "--batch", "4", "--max-text-len", "24", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:2: image 'images/absent.png' not found")
    assert result.stderr.count("\n") == 1

    result = CliRunner().invoke(main, args + ["--skip-bad", "--eval-data", str(data_dir / "val.jsonl")])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad lines" in result.stderr and "convert with: pg2edge convert" in result.stdout
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 1] and records[1]["eval_examples"] == 5


def test_cli_repeat_rare_reaches_the_data_and_refuses_lines_without_a_task(base_opts, data_dir, tmp_path):
    """--repeat-rare is parsed as a task list and checked against the data before any step; a malformed
    --task-weights is one error line."""
    args = ["finetune", "--checkpoint", str(base_opts.checkpoint), "--data", str(data_dir / "train.jsonl"),
            "--steps", "1", "--batch", "4", "--repeat-rare", "detect, count_shape", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {data_dir / 'train.jsonl'}:1: task balancing and --repeat-rare need a " \
                            "\"task\" field on every line\n"
    assert not (tmp_path / "run" / "params.npz").exists()
    result = CliRunner().invoke(main, args[:-4] + ["--task-weights", "ocr", "--out", str(tmp_path / "run")])
    assert (result.exit_code, result.stderr) == (2, "error: --task-weights: expected TASK=WEIGHT pairs, found 'ocr'\n")
