"""Content checks for images and label maps.

Each check returns a list of problems (empty when fine) so that a caller can
report every problem of a subject at once; :func:`require` turns the first
problem into an :class:`InvalidScanError`.
"""

from __future__ import annotations

import numpy as np

from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.io import value_type_problem
from defacing_assets.imaging.volume import AFFINE_TOLERANCE_MM, Volume

MAX_LABEL = 8
"""Labels are 0 (background) and 1..8, the OARs in STUDY.md order."""


def image_problems(image: Volume) -> list[str]:
    """Why an image cannot be used: not one real number per voxel (RGB, complex,
    non-numeric), non-finite voxels, no contrast at all."""
    problems = []
    array = image.array
    problem = value_type_problem(array.dtype)
    if problem:
        return [f"image {problem}"]
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad == array.size:
            return [f"every voxel ({bad}) is non-finite (NaN or inf)"]
        if bad:
            problems.append(f"{bad} non-finite voxel(s) (NaN or inf)")
            array = array[np.isfinite(array)]
    if array.size == 0 or np.all(array == array.flat[0]):
        value = array.flat[0] if array.size else "nothing"
        problems.append(f"image is constant (every voxel is {value})")
    return problems


def label_problems(labels: Volume, image: Volume | None = None) -> list[str]:
    """Why a label map cannot be used: values, or a grid differing from the image."""
    problems = []
    array = labels.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            problems.append("label map has non-finite values")
        elif not np.all(array == np.round(array)):
            problems.append("label map is not integer-valued")
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        problem = value_type_problem(array.dtype) or f"has non-numeric type {array.dtype}"
        problems.append(f"label map {problem}")
    if not problems:
        low, high = float(np.min(array)), float(np.max(array))
        if low < 0 or high > MAX_LABEL:
            problems.append(f"label values range {low:g}..{high:g}, outside 0..{MAX_LABEL}")
    if image is not None:
        if labels.shape != image.shape:
            problems.append(f"label shape {labels.shape} differs from image shape {image.shape}")
        elif not labels.same_grid(image):
            difference = float(np.max(np.abs(labels.affine - image.affine)))
            problems.append(
                f"label affine differs from the image affine by {difference:.4g} mm "
                f"(tolerance {AFFINE_TOLERANCE_MM} mm)"
            )
    return problems


def require(problems: list[str], path: str) -> None:
    """Raise for the first problem, naming the file."""
    if problems:
        raise InvalidScanError(path, "; ".join(problems))
