"""`make demo`'s job: convert, run on the runtime, and agree with JAX (it exits non-zero otherwise)."""

from __future__ import annotations

from pg2edge.demo import run_random_init_demo


def test_demo_bundles_match_the_jax_model(tmp_path, capsys):
    run_random_init_demo("tiny", None, "caption en", 6, out=tmp_path / "demo_out")
    table = capsys.readouterr().out
    f32_row = next(line for line in table.splitlines() if line.startswith("tiny-56-f32"))
    assert "True" in f32_row
    assert (tmp_path / "demo_out" / "tiny-56-int4" / "manifest.json").is_file()
