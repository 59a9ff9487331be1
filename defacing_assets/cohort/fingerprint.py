"""Content hashes of input files, recorded with every materialization."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each file (folders hashed file by file, sorted), keyed by path."""
    digests = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[str(file)] = digest.hexdigest()
    return digests
