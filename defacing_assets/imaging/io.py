"""NIfTI reading and writing with nibabel, for local paths and fsspec URLs.

Reading validates the container (NIfTI, not truncated, at most 3-D after
squeezing, invertible affine, one real number per voxel: RGB, complex,
non-numeric and vector-valued images are refused, since every method and
check downstream assumes grey values) and raises :class:`InvalidScanError`
naming the file. Writing clears every free-text header field, so no
identifying text leaves the platform in a volume header, and writes the
container the file name says (``.nii`` plain, ``.nii.gz`` gzipped).

Writes are staged under hidden names beside their destination that carry the
writer's process id (``.<name>.tmp-<pid>-<hex>``), so that a writer killed
before its rename leaves something :func:`sweep_stale_staging` can recognise
as abandoned and remove.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import nibabel as nib
import numpy as np
from upath import UPath

from defacing_assets.imaging.atomic import atomic_write_bytes, is_local
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.volume import Volume

PathLike = str | Path | UPath

_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")

NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""The file names a volume can be written under; the suffix decides the container."""

VECTOR_INTENTS = {
    1004: "general matrix",
    1005: "symmetric matrix",
    1006: "displacement vector",
    1007: "vector",
    1008: "point set",
    1009: "triangle",
    1010: "quaternion",
    2003: "RGB vector",
    2004: "RGBA vector",
    2006: "FNIRT displacement field",
}
"""NIfTI intent codes whose voxels hold several values (not one grey value each)."""

STAGING = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<pid>\d+)-)?[0-9a-f]{12}$")
"""Hidden staging names: ``.<name>.tmp-<pid>-<hex>`` (this module and
:mod:`~defacing_assets.imaging.atomic`), or ``.<name>.tmp-<hex>`` left by older versions,
which record no owner."""

STALE_STAGING_S = 60.0
"""A staged file of a dead writer is removed once it is at least this old."""
UNOWNED_STAGING_S = 24 * 3600.0
"""A staged file that records no writer is removed once it is at least this old: no
write of this platform takes a day, so by then its writer is gone."""


def _as_upath(path: PathLike) -> UPath:
    return path if isinstance(path, UPath) else UPath(path)


def volume_from_bytes(data: bytes, name: str) -> Volume:
    """Decode NIfTI (optionally gzipped) bytes; ``name`` is used in errors."""
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise InvalidScanError(name, f"corrupt or truncated gzip data ({error})") from None
    try:
        image = nib.Nifti1Image.from_bytes(data)
    except Exception:
        try:
            image = nib.Nifti2Image.from_bytes(data)
        except Exception as error:
            raise InvalidScanError(name, f"not a NIfTI file ({error})") from None
    intent = int(image.header["intent_code"])
    if intent in VECTOR_INTENTS:
        raise InvalidScanError(
            name,
            f"is vector-valued (NIfTI intent {VECTOR_INTENTS[intent]!r}, shape "
            f"{image.shape}); expected one grey value per voxel",
        )
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as error:
        raise InvalidScanError(name, f"truncated NIfTI data ({error})") from None
    problem = value_type_problem(array.dtype)
    if problem:
        raise InvalidScanError(name, problem)
    if array.ndim > 3:
        trailing = array.shape[3:]
        if any(n != 1 for n in trailing):
            raise InvalidScanError(
                name,
                f"has {3 + sum(n != 1 for n in trailing)} dimensions after squeezing "
                f"(shape {array.shape}); expected a 3-D volume",
            )
        array = array.reshape(array.shape[:3])
    if array.ndim < 3:
        raise InvalidScanError(name, f"shape {array.shape} is not a 3-D volume")
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InvalidScanError(name, "affine has missing or non-finite values")
    determinant = np.linalg.det(affine[:3, :3])
    if not np.isfinite(determinant) or abs(determinant) < 1e-6:
        raise InvalidScanError(name, f"degenerate affine (determinant {determinant:.3g})")
    return Volume(np.asarray(array), affine)


def value_type_problem(dtype: np.dtype) -> str | None:
    """Why voxels of ``dtype`` are not grey values (RGB, complex, not numbers), or None.

    Defacers, QC renders and the U-Net all take one real number per voxel; an
    RGB image passed validation and then failed deep in a step with a
    ``TypeError`` naming no file, and complex data ran pydeface for minutes.
    """
    dtype = np.dtype(dtype)
    if dtype.names is not None:
        fields = "".join(dtype.names)
        if fields in ("RGB", "RGBA"):
            return (
                f"is an {fields} colour image (one {fields} triple per voxel); "
                "expected a greyscale scan"
            )
        return f"has structured voxels ({', '.join(dtype.names)}); expected one number per voxel"
    if np.issubdtype(dtype, np.complexfloating):
        return f"is complex-valued ({dtype}); expected real grey values (magnitude image)"
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return None
    return f"has non-numeric voxels ({dtype}); expected one number per voxel"


def load_volume(path: PathLike) -> Volume:
    """Read one NIfTI file into a Volume."""
    path = _as_upath(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidScanError(str(path), "file not found") from None
    except IsADirectoryError:
        raise InvalidScanError(str(path), "is a folder, not a NIfTI file") from None
    except OSError as error:
        raise InvalidScanError(str(path), f"cannot be read ({error.strerror or error})") from None
    if len(data) == 0:
        raise InvalidScanError(str(path), "file is empty")
    return volume_from_bytes(data, str(path))


def volume_to_bytes(
    volume: Volume, dtype: np.dtype | type | None = None, compressed: bool = True
) -> bytes:
    """Encode as NIfTI-1 (gzipped unless ``compressed`` is False), free-text header cleared."""
    array = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    image = nib.Nifti1Image(array, volume.affine)
    header = image.header
    for field in _TEXT_FIELDS:
        header[field] = b""
    header.set_qform(volume.affine, code=1)
    header.set_sform(volume.affine, code=1)
    if not compressed:
        return image.to_bytes()
    return gzip.compress(image.to_bytes(), compresslevel=4, mtime=0)


def nifti_suffix_problem(path: PathLike) -> str | None:
    """Why a volume cannot be written under this name (its suffix is not a NIfTI one)."""
    name = _as_upath(path).name
    if name.lower().endswith(NIFTI_SUFFIXES):
        return None
    return (
        f"{path}: cannot tell which format to write; name it .nii.gz (gzipped NIfTI) "
        "or .nii (plain NIfTI)"
    )


def _is_compressed_name(path: UPath) -> bool:
    return path.name.lower().endswith(".gz")


def save_volume(volume: Volume, path: PathLike, dtype: np.dtype | type | None = None) -> None:
    """Write a Volume atomically (temporary name, then rename) in the container its
    name says: ``.nii`` plain, anything else gzipped NIfTI (as ``.nii.gz``)."""
    path = _as_upath(path)
    compressed = not path.name.lower().endswith(".nii")
    atomic_write_bytes(path, volume_to_bytes(volume, dtype, compressed))


def staging_path(path: UPath) -> UPath:
    """A hidden sibling of ``path`` naming this process, for a write to be renamed into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _write_durably(path: UPath, data: bytes) -> None:
    """Write ``data``; on a local disk also flush it, so a rename never exposes an empty file."""
    if not is_local(path):
        path.write_bytes(data)
        return
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _fsync_folder(folder: UPath) -> None:
    """Flush a local folder's entries after renames into it, where the OS allows it."""
    with suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_volumes(
    volumes: Sequence[tuple[Volume, PathLike]], dtype: np.dtype | type | None = None
) -> None:
    """Write several volumes so that either all of them are in place or none is.

    ``deface`` promises the defaced image and its kept mask together: a mask
    that cannot be written must not leave an image behind. Every volume is
    encoded and staged first (nothing at the destinations changes if that
    fails), then all are renamed; a rename that fails removes the ones
    already renamed. Each name must end in ``.nii`` or ``.nii.gz``
    (:func:`nifti_suffix_problem`), which decides the container.
    """
    targets = [_as_upath(path) for _, path in volumes]
    for path in targets:
        problem = nifti_suffix_problem(path)
        if problem:
            raise ValueError(problem)
    encoded = [
        volume_to_bytes(volume, dtype, _is_compressed_name(path))
        for (volume, _), path in zip(volumes, targets, strict=True)
    ]
    staged: list[tuple[UPath, UPath]] = []
    placed: list[UPath] = []
    try:
        for path, data in zip(targets, encoded, strict=True):
            temporary = staging_path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                staged.append((temporary, path))
                _write_durably(temporary, data)
            except OSError as error:  # name the destination, not the hidden staging file
                raise OSError(error.errno, error.strerror, str(path)) from error
        for temporary, path in staged:
            try:
                temporary.rename(path)
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(path)) from error
            placed.append(path)
        for folder in {path.parent for path in placed if is_local(path)}:
            _fsync_folder(folder)
    except BaseException:
        for temporary, _ in staged:
            with suppress(OSError):
                temporary.unlink()
        for path in placed:
            with suppress(OSError):
                path.unlink()
        raise


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def sweep_stale_staging(
    folder: PathLike,
    min_age_s: float = STALE_STAGING_S,
    unowned_age_s: float = UNOWNED_STAGING_S,
) -> list[Path]:
    """Remove hidden staging files and folders abandoned by killed writers; return them.

    A write killed between staging and rename (SIGKILL, power loss) leaves its
    hidden ``.<name>.tmp-*`` sibling, possibly holding patient data, forever.
    One is abandoned when the process its name records is dead and it is at
    least ``min_age_s`` old, or, when it records no process, at least
    ``unowned_age_s`` old. Local folders only; a folder that cannot be listed
    is left alone.
    """
    if isinstance(folder, UPath):
        if not is_local(folder):
            return []
        folder = folder.path
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = STAGING.match(entry.name)
        if match is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = match.group("pid")
        if pid is None:
            stale = age >= unowned_age_s
        else:
            stale = age >= min_age_s and not process_alive(int(pid))
        if not stale:
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed
