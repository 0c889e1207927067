"""The same 3 steps agree across device layouts and accumulation: 1 device vs a 2x2 mesh, batch 4 vs 2 x accum 2."""

from __future__ import annotations

import json

import pytest

from .helpers import losses, replace, run, run_subprocess


@pytest.fixture(scope="module")
def baseline(data_dir, source_ckpt, tmp_path_factory):
    """3 steps, batch 4, accum 1, one device: the reference curve."""
    from pg2edge.train import TrainOptions

    opts = TrainOptions(data=data_dir / "train.jsonl", out=tmp_path_factory.mktemp("baseline") / "run", steps=3,
                        batch=4, checkpoint=source_ckpt, lr=1e-3, warmup=0.0, max_text_len=24, save_every=0)
    result = run(opts)
    assert result.mesh_shape == {"data": 1, "fsdp": 1}
    return opts, losses(opts.out)


def test_2x2_mesh_matches_one_device(baseline, tmp_path):
    opts, want = baseline
    sharded = replace(opts, out=tmp_path / "sharded", fsdp=2)
    proc = run_subprocess(sharded, devices=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["mesh"] == {"data": 2, "fsdp": 2}
    got = losses(sharded.out)
    assert sorted(got) == [1, 2, 3]
    assert got == pytest.approx(want, rel=1e-5)


def test_accumulating_two_half_batches_matches_one_full_batch(baseline, tmp_path):
    opts, want = baseline
    accum = replace(opts, out=tmp_path / "accum", batch=2, accum=2)
    run(accum)
    assert losses(accum.out) == pytest.approx(want, rel=1e-5)
