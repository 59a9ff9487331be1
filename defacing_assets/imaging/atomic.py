"""Atomic writes: a killed step never leaves a file that reads as valid.

Data goes to a temporary name in the destination folder and is renamed into
place, for single files and for whole partition folders. Works on local paths
and on fsspec URLs (where the rename is a copy-then-delete).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from upath import UPath


def _temporary_sibling(path: UPath, tag: str) -> UPath:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def atomic_write_bytes(path: UPath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path, "tmp")
    temporary.write_bytes(data)
    temporary.rename(path)


def _remove_tree(path: UPath) -> None:
    if not path.exists():
        return
    if path.is_dir():
        for child in path.iterdir():
            _remove_tree(child)
        path.rmdir()
    else:
        path.unlink()


@contextmanager
def atomic_directory(path: UPath) -> Iterator[UPath]:
    """Yield a fresh temporary folder; on success it replaces ``path`` whole.

    On an exception the temporary folder is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_sibling(path, "tmp")
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        _remove_tree(staging)
        raise
    previous = _temporary_sibling(path, "old")
    if path.exists():
        path.rename(previous)
    staging.rename(path)
    _remove_tree(previous)
