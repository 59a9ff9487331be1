"""NIfTI reading and writing with nibabel, for local paths and fsspec URLs.

Reading validates the container (NIfTI, not truncated, at most 3-D after
squeezing, invertible affine) and raises :class:`InvalidScanError` naming the
file. Writing clears every free-text header field, so no identifying text
leaves the platform in a volume header.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from upath import UPath

from defacing_assets.imaging.atomic import atomic_write_bytes
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.volume import Volume

PathLike = str | Path | UPath

_TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")


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
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as error:
        raise InvalidScanError(name, f"truncated NIfTI data ({error})") from None
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


def volume_to_bytes(volume: Volume, dtype: np.dtype | type | None = None) -> bytes:
    """Encode as gzipped NIfTI-1 with free-text header fields cleared."""
    array = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    image = nib.Nifti1Image(array, volume.affine)
    header = image.header
    for field in _TEXT_FIELDS:
        header[field] = b""
    header.set_qform(volume.affine, code=1)
    header.set_sform(volume.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=4, mtime=0)


def save_volume(volume: Volume, path: PathLike, dtype: np.dtype | type | None = None) -> None:
    """Write a Volume as ``.nii.gz``, atomically (temporary name, then rename)."""
    atomic_write_bytes(_as_upath(path), volume_to_bytes(volume, dtype))
