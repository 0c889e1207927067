"""`pg2edge inspect` prints a checkpoint's summary, and turns bad input into one `error:` line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pg2edge.cli import main


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "safetensors-sharded"])
def test_inspect_prints_format_variant_count_dtypes(written, fmt):
    result = CliRunner().invoke(main, ["inspect", str(written[fmt, "bfloat16"])])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    fields = {k.strip(): v for k, v in lines.items()}
    assert fields["format"] == fmt
    assert fields["variant"] == "tiny-56"
    assert fields["parameters"] == "349,808"
    assert fields["dtypes"].startswith("bfloat16 x")
    assert "MiB" in fields["file_bytes"]


def test_inspect_bad_input_is_one_error_line_with_exit_2(tmp_path):
    bad = tmp_path / "evil.npz"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle of the int 1
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {bad}: expected a zip archive")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_inspect_subprocess_has_no_traceback(tmp_path):
    missing = tmp_path / "absent.npz"
    proc = subprocess.run([sys.executable, "-m", "pg2edge.cli", "inspect", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {missing}: no such file or directory\n"


def test_readers_import_no_heavy_frameworks(written):
    """The loaders run on devices: numpy + ml_dtypes + stdlib only (no jax/torch/tensorflow/safetensors)."""
    code = ("import sys; from pg2edge.checkpoint import load_checkpoint, describe; "
            f"load_checkpoint({str(written['safetensors-sharded', 'float32'])!r}); "
            f"load_checkpoint({str(written['npz', 'bfloat16'])!r}); "
            "heavy = {'jax', 'torch', 'tensorflow', 'safetensors', 'transformers', 'flax'} & set(sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
