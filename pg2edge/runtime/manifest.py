"""The bundle manifest (DESIGN §5): its format version, reading, and checksum verification.

Stdlib only, so the on-device runtime can verify a bundle before loading any part.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pg2edge.errors import Pg2EdgeError

MANIFEST = "manifest.json"
FORMAT = "pg2edge-bundle"
FORMAT_VERSION = 2  # 2: the ONNX `step` returns the cache (present_k_i), written in place


class BundleError(Pg2EdgeError):
    """A bundle is missing files, has a bad manifest, an unsupported version, or a tampered file."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Streaming sha256, so multi-GB parts never sit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: str | Path, verify: bool = True) -> dict:
    """Load `manifest.json`, check format/version and (optionally) every file's sha256."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: not a pg2edge bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: manifest is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {manifest.get('format_version')!r} is not supported "
                          f"(this runtime reads version {FORMAT_VERSION})")
    if verify:
        for rel, meta in manifest.get("files", {}).items():
            f = bundle / rel
            if not f.is_file():
                raise BundleError(f"{f}: listed in the manifest but missing")
            if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
                raise BundleError(f"{f}: checksum mismatch (file modified or corrupt)")
    return manifest
