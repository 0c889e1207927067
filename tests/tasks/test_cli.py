"""`pg2edge tasks` writes a suite; an existing --out is one `error:` line and exit 2 unless --force."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pg2edge.cli import main


def test_tasks_writes_the_suite(tmp_path):
    out = tmp_path / "suite"
    result = CliRunner().invoke(main, ["tasks", "--out", str(out), "--n", "10", "--seed", "2", "--res", "112"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"images", "train.jsonl", "train_simple.jsonl", "val.jsonl", "test.jsonl",
                                              "meta.json"}
    assert len(list((out / "images").glob("*.png"))) == 10
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["seed"], meta["res"], meta["n_images"], meta["layout"]) == (2, 112, 10, "grid")
    assert "train 8 images" in result.stdout


def test_layout_free_is_recorded_and_draws_other_images(tmp_path):
    runs = {}
    for layout in ("grid", "free"):
        out = tmp_path / layout
        result = CliRunner().invoke(main, ["tasks", "--out", str(out), "--n", "6", "--res", "56", "--layout", layout])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "meta.json").read_text())["layout"] == layout
        runs[layout] = [p.read_bytes() for p in sorted((out / "images").glob("*.png"))]
    assert all(a != b for a, b in zip(runs["grid"], runs["free"]))


def test_existing_out_is_one_error_line_and_force_replaces_it(tmp_path):
    out = tmp_path / "suite"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    args = ["tasks", "--out", str(out), "--n", "3", "--res", "56"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {out}: already exists (pass --force to replace it)\n"
    assert (out / "keep.txt").exists()
    result = CliRunner().invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "meta.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]  # no staging or old dirs left


def test_bad_options_exit_2(tmp_path):
    for bad in (["--n", "0"], ["--n", "3", "--res", "20"], ["--n", "3", "--seed", "-1"], ["--n", "3", "--layout", "x"]):
        result = CliRunner().invoke(main, ["tasks", "--out", str(tmp_path / "x"), *bad])
        assert result.exit_code == 2, bad
    assert not (tmp_path / "x").exists()
