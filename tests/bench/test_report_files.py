"""Benchmark result files: JSON and markdown side by side, replaced whole, no temp files left behind."""

from __future__ import annotations

import json

import pytest

from pg2edge.bench.report_files import write_report


def test_the_report_round_trips_replaces_the_previous_one_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "results"
    paths = write_report({"rows": [1]}, "old\n", out, "sweep")
    assert [p.name for p in paths] == ["sweep.json", "sweep.md"]
    write_report({"rows": [{"kl": 0.5}]}, "| a |\n", out, "sweep")
    assert json.loads(paths[0].read_text()) == {"rows": [{"kl": 0.5}]} and paths[1].read_text() == "| a |\n"
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json", "sweep.md"]


def test_a_result_that_cannot_be_written_keeps_the_previous_files(tmp_path):
    paths = write_report({"rows": [1]}, "old\n", tmp_path, "parity")
    with pytest.raises(TypeError):
        write_report({"rows": [object()]}, "new\n", tmp_path, "parity")
    assert json.loads(paths[0].read_text()) == {"rows": [1]} and paths[1].read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.json", "parity.md"]
