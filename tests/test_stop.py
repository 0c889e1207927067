"""A SIGTERM whose exception is swallowed (as in a gc callback) still stops the commit."""

import subprocess
import sys
import textwrap


def test_swallowed_sigterm_never_commits(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from pg2edge.export.bundle import staging_dir
        from pg2edge.stop import stop_on_sigterm

        stop_on_sigterm()
        out = Path({str(tmp_path / "out")!r})
        try:
            with staging_dir(out, force=False) as tmp:
                (tmp / "a.bin").write_bytes(b"x")
                try:  # what a gc callback does with the handler's exception
                    os.kill(os.getpid(), signal.SIGTERM)
                except SystemExit:
                    pass
        finally:
            print(sorted(p.name for p in out.parent.iterdir()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
