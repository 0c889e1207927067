"""Kill -9 after a checkpoint, resume, and retrace the uninterrupted run; the exported model is the trained one."""

from __future__ import annotations

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from pg2edge.checkpoint import load_checkpoint
from pg2edge.config import config_from_dict, get_config
from pg2edge.param_layout import flatten
from pg2edge.tokenizer import Tokenizer
from pg2edge.train import read_metrics

from .helpers import losses, replace, run, run_subprocess


@pytest.fixture(scope="module")
def straight(data_dir, source_ckpt, tmp_path_factory):
    from pg2edge.train import TrainOptions

    opts = TrainOptions(data=data_dir / "train.jsonl", out=tmp_path_factory.mktemp("straight") / "run", steps=6,
                        batch=4, checkpoint=source_ckpt, lr=1e-3, warmup=0.3, max_text_len=24, save_every=3)
    return opts, run(opts)


def test_killed_run_resumes_on_the_same_trajectory(straight, tmp_path):
    opts, _ = straight
    want = losses(opts.out)
    assert sorted(want) == [1, 2, 3, 4, 5, 6]
    resumed = replace(opts, out=tmp_path / "resumed")
    proc = run_subprocess(resumed, kill_after=3)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (resumed.out / "checkpoints" / "3").is_dir() and not (resumed.out / "checkpoints" / "6").exists()
    assert not (resumed.out / "params.npz").exists()

    result = run(resumed)
    assert result.start_step == 3
    assert [r["step"] for r in read_metrics(resumed.out)] == [1, 2, 3, 4, 5, 6]
    got = losses(resumed.out)
    assert got == pytest.approx(want, rel=1e-6)
    again = run(resumed)  # a finished run resumes to nothing and re-exports the same model
    assert again.start_step == 6 and again.last == {}


def test_output_dir_is_a_plain_checkpoint_of_the_trained_params(straight, source_ckpt):
    opts, result = straight
    cfg, params = load_checkpoint(opts.out / "params.npz")
    assert cfg.name == "tiny-56" and result.params_path == opts.out / "params.npz"
    restored = ocp.StandardCheckpointer().restore((opts.out / "checkpoints" / "6" / "state").absolute())
    trained = flatten(restored["trainable"]["params"])
    assert set(trained) == set(params)
    for name, w in params.items():
        np.testing.assert_array_equal(w, np.asarray(trained[name]), err_msg=name)
    _, source = load_checkpoint(source_ckpt)
    assert not np.array_equal(params["llm/layers/mlp/linear"], source["llm/layers/mlp/linear"])
    assert config_from_dict(json.loads((opts.out / "config.json").read_text())) == get_config("tiny")
    Tokenizer.from_file(opts.out / "tokenizer.model").check_config(cfg.text)


def test_resume_refuses_a_different_run(straight, tmp_path):
    from pg2edge.config import ConfigError

    opts, _ = straight
    with pytest.raises(ConfigError, match=r"--batch was 4, now 2"):
        run(replace(opts, batch=2))


def test_an_output_dir_is_a_checkpoint_to_continue_from(straight, tmp_path):
    opts, _ = straight
    chained = replace(opts, checkpoint=opts.out, out=tmp_path / "chained", steps=1, save_every=0)
    result = run(chained)
    assert result.start_step == 0 and result.cfg == get_config("tiny")
    assert (chained.out / "tokenizer.model").read_bytes() == (opts.out / "tokenizer.model").read_bytes()
    _, first = load_checkpoint(opts.out / "params.npz")
    _, second = load_checkpoint(chained.out / "params.npz")
    assert not np.array_equal(first["llm/layers/mlp/linear"], second["llm/layers/mlp/linear"])
