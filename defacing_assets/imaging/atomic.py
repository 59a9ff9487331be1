"""Atomic writes: a killed step never leaves a file that reads as valid.

Data goes to a temporary name in the destination folder and is renamed into
place, for single files and for whole partition folders. Works on local paths
and on fsspec URLs (``s3://``, ``gs://``, ``memory://``...). Object stores have
no folder rename: there a folder is replaced file by file, its JSON record
(``scan.json``, ``result.json``, ``folds.json``, ``config.json``: what the
readers open first or require) removed first and written last, so an
interrupted replace leaves a partition that reads as missing, never a mix of
old and new files that reads as valid.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from upath import UPath

RECORD_SUFFIX = ".json"
"""Files with this suffix describe their folder; see the module docstring."""

_LOCAL_PROTOCOLS = {"", "file", "local"}


def is_local(path: UPath) -> bool:
    """Whether ``path`` (a UPath or a pathlib.Path) is on the local file system, where
    renames are atomic."""
    return getattr(path, "protocol", "") in _LOCAL_PROTOCOLS


def _temporary_sibling(path: UPath, tag: str) -> UPath:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def atomic_write_bytes(path: UPath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path, "tmp")
    temporary.write_bytes(data)
    try:
        temporary.rename(path)
    except BaseException:
        with suppress(OSError):  # no stray temporary beside a destination we could not write
            temporary.unlink()
        raise


def _remove_tree(path: UPath) -> None:
    if not path.exists():
        return
    if not is_local(path):
        # Object stores have no empty folders to rmdir; fsspec removes the prefix.
        path.fs.rm(path.path, recursive=True)
        return
    if path.is_dir():
        for child in path.iterdir():
            _remove_tree(child)
        path.rmdir()
    else:
        path.unlink()


def _relative(file: str, folder: str) -> str:
    return file[len(folder) :].lstrip("/")


def _replace_remote(staging: UPath, path: UPath) -> None:
    """Move ``staging``'s files to ``path`` on a file system without folder rename."""
    fs = path.fs
    if path.exists():
        old = sorted(fs.find(path.path), key=lambda f: not f.endswith(RECORD_SUFFIX))
        for file in old:  # records first: from here on the old partition reads as missing
            fs.rm_file(file)
        _remove_tree(path)
    new = sorted(fs.find(staging.path), key=lambda f: f.endswith(RECORD_SUFFIX))
    for file in new:  # records last: the partition reads as valid only when complete
        fs.mv(file, f"{path.path.rstrip('/')}/{_relative(file, staging.path)}")
    _remove_tree(staging)


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
    if not is_local(path):
        _replace_remote(staging, path)
        return
    previous = _temporary_sibling(path, "old")
    if path.exists():
        path.rename(previous)
    staging.rename(path)
    _remove_tree(previous)
