"""Atomic writes are durable (data fsynced before the rename, the folder after it) and
clean up after writers killed mid-write."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from upath import UPath

from defacing_assets.imaging import atomic
from defacing_assets.imaging.atomic import atomic_directory, atomic_write_bytes
from defacing_assets.imaging.io import STAGING


class FsyncLog(list):
    """Every os.fsync as (is a folder, inode, whether ``destination`` existed then)."""

    destination = Path("/nonexistent")


@pytest.fixture
def fsyncs(monkeypatch) -> FsyncLog:
    calls = FsyncLog()
    real = os.fsync

    def recording(descriptor: int) -> None:
        info = os.fstat(descriptor)
        calls.append((stat.S_ISDIR(info.st_mode), info.st_ino, calls.destination.exists()))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    return calls


def test_a_written_file_is_fsynced_before_its_rename_and_its_folder_after(tmp_path, fsyncs):
    target = tmp_path / "table.parquet"
    fsyncs.destination = target
    atomic_write_bytes(UPath(target), b"payload")
    assert target.read_bytes() == b"payload"
    file_inode, folder_inode = target.stat().st_ino, tmp_path.stat().st_ino
    assert (False, file_inode, False) in fsyncs, "the data reached the disk before the rename"
    assert (True, folder_inode, True) in fsyncs, "the rename reached the disk"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_a_replaced_folder_is_fsynced_file_by_file_before_the_rename(tmp_path, fsyncs):
    target = tmp_path / "subject=S1"
    fsyncs.destination = target
    with atomic_directory(UPath(target)) as staging:
        (staging / "image.nii.gz").write_bytes(b"image")
        (staging / "nested").mkdir()
        (staging / "nested" / "scan.json").write_text("{}")
    for file in (target / "image.nii.gz", target / "nested" / "scan.json"):
        assert (False, file.stat().st_ino, False) in fsyncs, file
    assert (True, (target / "nested").stat().st_ino, False) in fsyncs
    assert (True, tmp_path.stat().st_ino, True) in fsyncs, "the rename reached the disk"


def test_object_stores_are_written_without_fsync(fsyncs):
    target = UPath("memory://atomic-test/out.bin")
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"
    assert fsyncs == []


def test_move_aside_keeps_the_file_under_a_dated_name(tmp_path):
    broken = tmp_path / "checkpoint.pt"
    broken.write_bytes(b"torn")
    moved = atomic.move_aside(broken)
    assert not broken.exists() and moved.read_bytes() == b"torn"
    assert moved.parent == tmp_path and moved.name.startswith("checkpoint.pt.corrupt-")


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_staging_names_carry_the_writers_pid(tmp_path, monkeypatch):
    seen: list[str] = []
    real = os.replace

    def recording(source, destination) -> None:
        seen.extend(n for n in (Path(source).name, Path(destination).name) if n[0] == ".")
        real(source, destination)

    monkeypatch.setattr(os, "replace", recording)
    atomic_write_bytes(UPath(tmp_path / "table.parquet"), b"x")
    with atomic_directory(UPath(tmp_path / "subject=S1")) as staging:
        (staging / "scan.json").write_text("{}")
    with atomic_directory(UPath(tmp_path / "subject=S1")) as staging:
        (staging / "scan.json").write_text("{}")
    assert len(seen) == 4 and all(STAGING.match(name) for name in seen), seen
    assert any(".old.tmp-" in name for name in seen), "the replaced copy is set aside too"
    assert {STAGING.match(name).group("pid") for name in seen} == {str(os.getpid())}


def _staged_patient_folders(*folders):
    for folder in folders:
        folder.mkdir()
        (folder / "image.nii.gz").write_bytes(b"patient data")


def _write_subject_s1(folder):
    with atomic_directory(UPath(folder / "subject=S1")) as staging:
        (staging / "scan.json").write_text("{}")


def test_a_store_write_sweeps_staging_left_by_dead_writers_and_keeps_live_ones(tmp_path):
    old = time.time() - 3600
    dead = tmp_path / f".subject=S2.tmp-{_dead_pid()}-0123456789ab"
    dead_old_copy = tmp_path / f".subject=S3.old.tmp-{_dead_pid()}-0123456789ab"
    live = tmp_path / f".subject=S4.tmp-{os.getpid()}-abcdefabcdef"
    _staged_patient_folders(dead, dead_old_copy, live)
    for folder in (dead, dead_old_copy, live):
        os.utime(folder, (old, old))
    _write_subject_s1(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["subject=S1", live.name])


def test_the_rerun_of_a_killed_write_removes_its_fresh_staging_at_once(tmp_path):
    """A killed step is re-run within seconds: its staging is not stale yet by age, but
    it is of a dead writer and of the very destination being rewritten."""
    killed = tmp_path / f".subject=S1.tmp-{_dead_pid()}-0123456789ab"
    killed_file = tmp_path / f".table.parquet.tmp-{_dead_pid()}-0123456789ab"
    other = tmp_path / f".subject=S2.tmp-{_dead_pid()}-abcdefabcdef"
    live = tmp_path / f".subject=S1.tmp-{os.getpid()}-abcdefabcdef"
    _staged_patient_folders(killed, other, live)
    killed_file.write_bytes(b"torn")
    _write_subject_s1(tmp_path)
    atomic_write_bytes(UPath(tmp_path / "table.parquet"), b"table")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["subject=S1", "table.parquet", other.name, live.name]
    ), "another destination's fresh staging waits until it is stale"
