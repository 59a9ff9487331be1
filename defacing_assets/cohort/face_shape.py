"""Each synthetic subject's own face: smooth displacements of the phantom's facial features.

Every subject is warped from one template head, so without this all faces are the same
face under an affine and a mild elastic field, and a face recogniser tells them apart
hardly better than chance (benchmarks/RESULTS.md). The features that recognition and
defacers depend on are reshaped one by one: nose length and width, lip thickness and
mouth width, chin and jaw, cheek fullness, eye-socket depth and forehead slope. Each is a
displacement inside a Gaussian window around the feature (phantom voxel indices, about
1 mm; see :mod:`phantom` for the axes), and all of them fade with depth under the skin
(:data:`FULL_DEPTH_MM` to :data:`ZERO_DEPTH_MM`) so that skin and fat move while bone, the
glands and the nodes stay where anatomy put them.

Amplitudes are drawn per subject (:func:`draw_face_shape`) and kept under about 0.5 mm of
displacement per mm, so the warp never folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from defacing_assets.cohort.phantom import MIDLINE_I, NECK_MM, HeadPhantom, head_phantom

FULL_DEPTH_MM = 6.0
"""Tissue up to this deep under the skin (and all air in front) moves fully."""
ZERO_DEPTH_MM = 26.0
"""Tissue deeper than this never moves: the mandible, glands and nodes keep their places."""


@dataclass(frozen=True)
class Feature:
    """One reshaped feature: where its window sits and what its amplitude means."""

    centre: tuple[float, float, float]
    """Template voxel index (i, j, k), k above the template's lowest slice."""
    sigma: tuple[float, float, float]
    """Window widths in voxels."""
    amplitude: tuple[float, float]
    """Range the subject's amplitude is drawn from."""
    kind: str
    """forward (+j, mm), backward (-j, mm), down (-k, mm), stretch (i about the midline,
    relative), outward (away from the midline, mm), cheek (outward and forward, mm)."""
    mirrored: bool = False
    """Also applied at the mirror image across the midline (paired features)."""


FEATURES: dict[str, Feature] = {
    "nose_length_mm": Feature((88, 241, 55), (9, 14, 12), (-5.0, 6.0), "forward"),
    "nose_width": Feature((88, 232, 52), (12, 12, 12), (-0.25, 0.35), "stretch"),
    "lip_thickness_mm": Feature((88, 228, 38), (16, 8, 7), (-3.0, 4.0), "forward"),
    "mouth_width": Feature((88, 224, 38), (20, 10, 7), (-0.2, 0.3), "stretch"),
    "lower_face_mm": Feature((88, 215, 30), (40, 30, 18), (-6.0, 8.0), "down"),
    "chin_forward_mm": Feature((88, 222, 16), (18, 14, 10), (-6.0, 7.0), "forward"),
    "jaw_width_mm": Feature((25, 170, 22), (12, 20, 15), (-5.0, 7.0), "outward", True),
    "cheek_fullness_mm": Feature((50, 205, 65), (13, 13, 15), (-4.0, 6.0), "cheek", True),
    "eye_socket_depth_mm": Feature((60, 214, 92), (10, 8, 7), (-2.0, 4.0), "backward", True),
    "face_width": Feature((88, 200, 70), (45, 30, 35), (-0.12, 0.15), "stretch"),
}
FOREHEAD_SLOPE = (-0.12, 0.12)
"""Forward shift of the forehead's skin per mm above the brows (k = 100)."""
_BROW_K = 100.0


def draw_face_shape(rng: np.random.Generator) -> dict[str, float]:
    """One subject's amplitudes, as plain numbers for ``subject.json``."""
    shape = {
        name: round(float(rng.uniform(*feature.amplitude)), 4) for name, feature in FEATURES.items()
    }
    shape["forehead_slope"] = round(float(rng.uniform(*FOREHEAD_SLOPE)), 4)
    return shape


@lru_cache(maxsize=2)
def _surface_weight(modality: str) -> np.ndarray:
    """1 in front of and just under the skin, 0 deep inside (float32, phantom grid)."""
    depth = ndimage.distance_transform_edt(head_phantom(modality).body)
    weight = np.clip((ZERO_DEPTH_MM - depth) / (ZERO_DEPTH_MM - FULL_DEPTH_MM), 0.0, 1.0)
    return (weight * weight * (3 - 2 * weight)).astype(np.float32)


def _window(points: np.ndarray, centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.sum(((points - centre) / sigma) ** 2, axis=1))


def face_displacement(
    points: np.ndarray, shape: dict[str, float], phantom: HeadPhantom
) -> np.ndarray:
    """(N, 3) displacement, in phantom voxels, of (N, 3) phantom-grid indices."""
    displacement = np.zeros_like(points, dtype=np.float64)
    lateral = points[:, 0] - MIDLINE_I
    for name, feature in FEATURES.items():
        amplitude = shape[name]
        centre = np.array(feature.centre, float) + [0.0, 0.0, NECK_MM]
        centres = [centre]
        if feature.mirrored:
            centres.append(centre * [-1, 1, 1] + [2 * MIDLINE_I, 0, 0])
        for side_centre in centres:
            window = amplitude * _window(points, side_centre, np.array(feature.sigma, float))
            side = np.sign(side_centre[0] - MIDLINE_I) or 1.0
            if feature.kind == "forward":
                displacement[:, 1] += window
            elif feature.kind == "backward":
                displacement[:, 1] -= window
            elif feature.kind == "down":
                displacement[:, 2] -= window
            elif feature.kind == "stretch":
                displacement[:, 0] += window * lateral
            elif feature.kind == "outward":
                displacement[:, 0] += side * window
            elif feature.kind == "cheek":
                displacement[:, 0] += side * window * np.sqrt(0.5)
                displacement[:, 1] += window * np.sqrt(0.5)
            else:
                raise ValueError(f"unknown feature kind {feature.kind!r}")
    above_brows = np.clip(points[:, 2] - NECK_MM - _BROW_K, 0.0, None)
    front = 1.0 / (1.0 + np.exp(-(points[:, 1] - 160.0) / 10.0))
    displacement[:, 1] += (
        shape["forehead_slope"] * above_brows * front * np.exp(-0.5 * (lateral / 45.0) ** 2)
    )
    weight = ndimage.map_coordinates(
        _surface_weight(phantom.modality), points.T, order=1, mode="nearest"
    )
    return displacement * weight[:, None]


def reshaped_source(
    points: np.ndarray, shape: dict[str, float], phantom: HeadPhantom
) -> np.ndarray:
    """Where the reshaped face at ``points`` (phantom indices) comes from: ``s`` with
    ``s + d(s) = points``, by fixed-point iteration (the displacement is smooth and small)."""
    source = points - face_displacement(points, shape, phantom)
    return points - face_displacement(source, shape, phantom)
