"""Atomic writes: a killed step never leaves a file that reads as valid.

Data goes to a temporary name in the destination folder and is renamed into
place, for single files and for whole partition folders. Works on local paths
and on fsspec URLs (``s3://``, ``gs://``, ``memory://``...). Object stores have
no folder rename: there a folder is replaced file by file, its JSON record
(``scan.json``, ``result.json``, ``folds.json``, ``config.json``: what the
readers open first or require) removed first and written last, so an
interrupted replace leaves a partition that reads as missing, never a mix of
old and new files that reads as valid.

On local disks a rename is only durable once the data and the folder entry reach the
disk: files are fsynced before they are renamed into place and the folder after, so a
power cut cannot leave a renamed file that is empty or a rename that never happened.

Staging names are hidden and carry the writer's process id
(``.<name>.tmp-<pid>-<hex>``; the old copy a folder replace sets aside,
``.<name>.old.tmp-<pid>-<hex>``), the pattern
:func:`defacing_assets.imaging.io.sweep_stale_staging` recognises: a writer
SIGKILLed between staging and rename leaves one behind, possibly holding patient
data. Every later local write into the same folder removes those whose writer is
dead: at once the ones for its own destination (it replaces what they were writing,
as the re-run of a killed step does), the others once they are
:data:`~defacing_assets.imaging.io.STALE_STAGING_S` old.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from upath import UPath

RECORD_SUFFIX = ".json"
"""Files with this suffix describe their folder; see the module docstring."""

_LOCAL_PROTOCOLS = {"", "file", "local"}


def is_local(path: UPath) -> bool:
    """Whether ``path`` (a UPath or a pathlib.Path) is on the local file system, where
    renames are atomic."""
    return getattr(path, "protocol", "") in _LOCAL_PROTOCOLS


def _temporary_sibling(path: UPath, tag: str = "") -> UPath:
    """A hidden sibling naming this process: ``.<name>[.<tag>].tmp-<pid>-<hex12>``."""
    name = f"{path.name}.{tag}" if tag else path.name
    return path.with_name(f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _sweep_abandoned_staging(path: UPath) -> None:
    """Before ``path`` is written: remove staging entries of dead writers in its folder
    (local folders only). Those of ``path`` itself go at once, whatever their age: this
    write replaces what they were writing, and a live writer of the same destination
    keeps its own. Those of other destinations go once they are stale
    (:func:`~defacing_assets.imaging.io.sweep_stale_staging`). Never fails the write."""
    folder = path.parent
    if not is_local(folder):
        return
    # Imported here: imaging.io imports this module.
    from defacing_assets.imaging.io import STAGING, process_alive, sweep_stale_staging

    with suppress(OSError):
        sweep_stale_staging(folder)
        own = {path.name, f"{path.name}.old"}
        for entry in os.scandir(folder.path if isinstance(folder, UPath) else folder):
            match = STAGING.match(entry.name)
            if match is None or match.group("name") not in own or match.group("pid") is None:
                continue
            if process_alive(int(match.group("pid"))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with suppress(OSError):
                    os.unlink(entry.path)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a local file's data to disk (before it is renamed into place)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a local folder's entries (after a rename into it), where the OS allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory handles (Windows): nothing to flush
        return
    try:
        with suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_bytes(path: UPath, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or all of the new one;
    on local disks durably (fsync of the file, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned_staging(path)
    temporary = _temporary_sibling(path)
    try:
        if is_local(path):
            with open(temporary, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
            fsync_directory(path.parent)
        else:
            temporary.write_bytes(data)
            temporary.rename(path)
    except BaseException:
        with suppress(OSError):  # no stray temporary beside a destination we could not write
            temporary.unlink()
        raise


def move_aside(path: UPath | Path, reason: str = "corrupt") -> UPath | Path:
    """Rename a damaged or untrusted file to ``<name>.<reason>-<timestamp>``, so the next
    attempt starts clean while the file is kept for inspection; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}"
    target = path.with_name(f"{path.name}.{reason}-{stamp}")
    path.rename(target)
    return target


def _fsync_tree(path: UPath) -> None:
    """fsync every file and folder under a local staging folder before it is renamed."""
    for folder, _, files in os.walk(path):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_directory(folder)


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
    _sweep_abandoned_staging(path)
    staging = _temporary_sibling(path)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        _remove_tree(staging)
        raise
    if not is_local(path):
        _replace_remote(staging, path)
        return
    _fsync_tree(staging)
    previous = _temporary_sibling(path, "old")
    if path.exists():
        os.replace(path, previous)
    os.replace(staging, path)
    fsync_directory(path.parent)
    _remove_tree(previous)
