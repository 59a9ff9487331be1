"""The one Volume type: a voxel array with its voxel-to-world (RAS, mm) affine."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

AFFINE_TOLERANCE_MM = 1e-3
"""Two grids are the same when their affines differ by at most this (mm)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image or label map on a grid.

    Attributes:
        array: voxel values, shape (I, J, K), indexed like the NIfTI file.
        affine: 4x4 voxel-index to world (RAS+, mm) transform.
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3-D array, got shape {self.array.shape}")
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume needs a 4x4 affine, got shape {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"``: where each array axis points."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid holding other values (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(
                f"array shape {array.shape} does not match the grid {self.array.shape}"
            )
        return Volume(array, self.affine)

    def voxel_to_world(self, indices: np.ndarray) -> np.ndarray:
        """Map (N, 3) voxel indices to (N, 3) world points in mm."""
        indices = np.atleast_2d(np.asarray(indices, dtype=float))
        return indices @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) world points in mm to (N, 3) fractional voxel indices."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        inverse = np.linalg.inv(self.affine)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def same_grid(self, other: Volume, tolerance_mm: float = AFFINE_TOLERANCE_MM) -> bool:
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=tolerance_mm, rtol=0)
        )

    def to_canonical(self) -> Volume:
        """Reorder and flip axes so the array is RAS-oriented (no resampling)."""
        image = nib.as_closest_canonical(nib.Nifti1Image(self.array, self.affine))
        return Volume(np.asarray(image.dataobj), image.affine)
