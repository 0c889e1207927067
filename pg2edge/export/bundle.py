"""Write a bundle directory atomically: temp dir next to `--out`, manifest with sha256, rename.

An interrupted or failed convert leaves nothing at `--out` (and no temp dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pg2edge import __version__
from pg2edge.errors import Pg2EdgeError
from pg2edge.runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from pg2edge.stop import raise_if_stopped


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing `--out` unless `--force`."""
    if out.exists() and not force:
        raise Pg2EdgeError(f"{out}: already exists (pass --force to replace it)")


@contextlib.contextmanager
def staging_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp dir; on success it becomes `out`, on any failure it is removed."""
    out = Path(out)
    check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:  # from the moment the directory exists: a signal anywhere below must not leave it behind
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for the staging phase only
        yield tmp
        raise_if_stopped()  # a SIGTERM whose exception was swallowed (gc callback) must not commit
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(bundle: Path, manifest: dict) -> dict:
    """Add format, version and the sha256 of every file, then write manifest.json."""
    files = {}
    for f in sorted(p for p in Path(bundle).rglob("*") if p.is_file() and p.name != MANIFEST):
        files[f.relative_to(bundle).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "pg2edge_version": __version__,
            **manifest, "files": files}
    (Path(bundle) / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return full
