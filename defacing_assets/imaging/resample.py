"""Resampling through SimpleITK, converting between RAS (nibabel) and LPS (ITK)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import SimpleITK as sitk

from defacing_assets.imaging.volume import Volume

Interpolation = Literal["linear", "nearest", "bspline"]

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the same world geometry (ITK works in LPS)."""
    spacing = np.array(volume.spacing)
    direction_ras = volume.affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (_RAS_TO_LPS @ direction_ras).ravel()])
    image.SetOrigin([float(v) for v in _RAS_TO_LPS @ volume.affine[:3, 3]])
    return image


def from_sitk(image: sitk.Image) -> Volume:
    spacing = np.array(image.GetSpacing())
    direction_lps = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = (_RAS_TO_LPS @ direction_lps) * spacing
    affine[:3, 3] = _RAS_TO_LPS @ np.array(image.GetOrigin())
    return Volume(sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine)


def resample_like(
    volume: Volume,
    reference: Volume,
    interpolation: Interpolation = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (world positions preserved)."""
    resampled = sitk.Resample(
        to_sitk(volume),
        to_sitk(reference.with_array(np.zeros(reference.shape, dtype=np.uint8))),
        sitk.Transform(),
        _INTERPOLATORS[interpolation],
        float(default_value),
    )
    return from_sitk(resampled)


def resample_to_spacing(
    volume: Volume,
    spacing: tuple[float, float, float],
    interpolation: Interpolation = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Resample to a new voxel size covering the same field of view."""
    old_spacing = np.array(volume.spacing)
    new_spacing = np.array(spacing, dtype=float)
    if np.any(new_spacing <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    extent = old_spacing * np.array(volume.shape)
    new_shape = np.maximum(1, np.round(extent / new_spacing)).astype(int)
    direction = volume.affine[:3, :3] / old_spacing
    affine = np.eye(4)
    affine[:3, :3] = direction * new_spacing
    # Keep the field of view's corner fixed: shift by half the change in voxel size.
    affine[:3, 3] = volume.affine[:3, 3] + direction @ ((new_spacing - old_spacing) / 2)
    reference = Volume(np.zeros(tuple(new_shape), dtype=np.uint8), affine)
    return resample_like(volume, reference, interpolation, default_value)
