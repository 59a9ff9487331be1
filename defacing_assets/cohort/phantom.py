"""The head-and-neck phantom every synthetic subject is warped from.

Anatomy comes from a real head: the average head template with face that the
``pydeface`` package ships (``mean_reg2mean.nii.gz``, about 1 mm, RAS). That
template stops near the chin, while head-and-neck scans go down to the
clavicles, so the phantom adds :data:`NECK_MM` of neck below it (skin,
subcutaneous fat, muscle, airway, vertebral column with cord, jugular veins
and carotids), blended into the template over :data:`BLEND_SLICES`.

Positions below are template voxel indices (i toward the patient's right,
j anterior, k superior; k < 0 is the added neck). The template's midline is
i = 88, its eyes sit at k = 92, the nose tip at k = 55, the chin's underside
near k = 5; the face mask of pydeface removes everything anterior of j = 180
below the orbits. The phantom is built once per process and modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import nibabel as nib
import numpy as np
from scipy import ndimage

from defacing_assets.cohort.scan import Modality

NECK_MM = 110
"""Neck added below the template, in template slices (1 mm)."""
BLEND_SLICES = (4, 16)
"""Template slices over which the synthetic neck fades into the template."""
MIDLINE_I = 88

# Landmark rays: (i, k) in template indices; the landmark is the most anterior
# skin voxel along j.  The nose tip is searched over k in NOSE_SEARCH_K.
LANDMARK_RAYS = {"eye_left": (60, 92), "eye_right": (118, 92), "mouth": (88, 38)}
NOSE_SEARCH_K = (45, 70)


def template_path(name: str = "mean_reg2mean.nii.gz"):
    """Path of a data file shipped inside the pydeface package."""
    return resources.files("pydeface").joinpath("data", name)


@dataclass(frozen=True)
class HeadPhantom:
    """Phantom on the extended template grid (neck slices prepended along k)."""

    intensity: np.ndarray
    """float32, MR (T1-like, soft tissue about 230) or CT (HU)."""
    body: np.ndarray
    """bool, inside the skin."""
    affine: np.ndarray
    """voxel -> template world (RAS mm) of the extended grid."""
    landmarks_index: dict[str, np.ndarray]
    """face landmarks on the skin, extended-grid voxel indices."""
    modality: Modality

    @property
    def k_offset(self) -> int:
        """Add to a template slice index to get the extended-grid slice."""
        return NECK_MM


def _body_mask(smoothed: np.ndarray, threshold: float) -> np.ndarray:
    body = smoothed > threshold
    body = ndimage.binary_closing(body, iterations=2)
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    labelled, count = ndimage.label(body)
    if count > 1:
        sizes = ndimage.sum(body, labelled, range(1, count + 1))
        body = labelled == (1 + int(np.argmax(sizes)))
    return body


def _disc(ii: np.ndarray, jj: np.ndarray, centre: tuple[float, float], radii) -> np.ndarray:
    ri, rj = (radii, radii) if np.isscalar(radii) else radii
    return ((ii - centre[0]) / ri) ** 2 + ((jj - centre[1]) / rj) ** 2 <= 1.0


# Tissue values of the synthetic neck, MR (T1-like scale of the template) and CT (HU).
_NECK_TISSUE = {
    "skin": (280.0, 40.0),
    "fat": (380.0, -100.0),
    "muscle": (200.0, 45.0),
    "air": (8.0, -1000.0),
    "marrow": (300.0, 350.0),
    "cortex": (90.0, 1300.0),
    "csf": (70.0, 10.0),
    "cord": (230.0, 35.0),
    "vessel": (20.0, 40.0),
    "esophagus": (180.0, 40.0),
}


def _neck_slice(k: int, ii: np.ndarray, jj: np.ndarray, submental: np.ndarray, column: int):
    """Body mask and tissue values of one synthetic neck slice (template index k < 16)."""
    half_width = 50.0 + 8.0 * np.clip((k + 40.0) / 44.0, 0.0, 1.0)
    body = _disc(ii, jj, (MIDLINE_I, 112.0), (half_width, 60.0))
    chin_limit = 170.0 + 46.0 * np.clip((k + 25.0) / 41.0, 0.0, 1.0)
    if k > -25:
        body |= submental & (jj < chin_limit)
    depth = ndimage.distance_transform_edt(body)
    values = np.full(ii.shape, _NECK_TISSUE["muscle"][column], dtype=np.float32)
    values[depth < 6.0] = _NECK_TISSUE["fat"][column]
    values[depth < 1.5] = _NECK_TISSUE["skin"][column]
    airway_j = 135.0 + 15.0 * np.clip((16.0 - k) / 76.0, 0.0, 1.0)
    airway_radius = 10.0 if -50 <= k <= -10 else 8.0
    values[_disc(ii, jj, (MIDLINE_I, airway_j - 14.0), 5.0)] = _NECK_TISSUE["esophagus"][column]
    values[_disc(ii, jj, (MIDLINE_I, airway_j), airway_radius)] = _NECK_TISSUE["air"][column]
    values[_disc(ii, jj, (MIDLINE_I, 110.0), 11.5)] = _NECK_TISSUE["cortex"][column]
    values[_disc(ii, jj, (MIDLINE_I, 110.0), 10.0)] = _NECK_TISSUE["marrow"][column]
    values[_disc(ii, jj, (MIDLINE_I, 74.0), (12.0, 6.0))] = _NECK_TISSUE["cortex"][column]
    values[_disc(ii, jj, (MIDLINE_I, 90.0), 7.0)] = _NECK_TISSUE["csf"][column]
    values[_disc(ii, jj, (MIDLINE_I, 90.0), 4.5)] = _NECK_TISSUE["cord"][column]
    for side in (-1, 1):
        values[_disc(ii, jj, (MIDLINE_I + side * 28.0, 126.0), 5.0)] = _NECK_TISSUE["vessel"][
            column
        ]
        values[_disc(ii, jj, (MIDLINE_I + side * 20.0, 134.0), 3.5)] = _NECK_TISSUE["vessel"][
            column
        ]
    values[~body] = _NECK_TISSUE["air"][column] if column else 0.0
    return body, values


def _template_as_ct(template: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Approximate Hounsfield units from the T1 template.

    T1 intensity relative to soft tissue maps dark to air, mid to soft tissue
    and bright (fat, marrow) to fat; a shell 4-10 mm under the scalp above the
    orbits becomes skull bone. Good enough for skin thresholds at -300 HU and
    bone above 700 HU, which is what the CT experiment relies on.
    """
    relative = template / 230.0
    hu = np.interp(relative, [0.0, 0.2, 0.45, 0.8, 1.35, 1.8], [-1000, -950, -60, 40, 30, -100])
    hu = hu.astype(np.float32)
    depth = ndimage.distance_transform_edt(body)
    skull = body & (depth >= 4) & (depth <= 10)
    skull[:, :, : NECK_MM + 80] = False
    hu[skull] = 1100.0
    hu[~body] = -1000.0
    return hu


@lru_cache(maxsize=2)
def head_phantom(modality: Modality = "MR") -> HeadPhantom:
    """Build (once per process) the extended head-and-neck phantom."""
    image = nib.load(str(template_path()))
    template = np.asarray(image.dataobj, dtype=np.float32)
    smoothed = ndimage.gaussian_filter(template, 1.5)
    template_body = _body_mask(smoothed, threshold=66.0)

    # The template fades toward its lower edge (fewer heads were averaged
    # there); even it out so the neck joins tissue of the same brightness.
    slice_mean = np.array(
        [
            template[:, :, k][template_body[:, :, k]].mean() if template_body[:, :, k].any() else 0
            for k in range(template.shape[2])
        ]
    )
    reference = slice_mean[50]
    gain = np.ones(template.shape[2], dtype=np.float32)
    gain[:50] = np.clip(reference / np.maximum(slice_mean[:50], 1.0), 1.0, 2.5)
    template = template * gain[None, None, :]

    column = 0 if modality == "MR" else 1
    template_values = template if column == 0 else _template_as_ct(template, template_body)

    n_i, n_j, n_k = template.shape
    shape = (n_i, n_j, n_k + NECK_MM)
    intensity = np.empty(shape, dtype=np.float32)
    body = np.zeros(shape, dtype=bool)
    intensity[:, :, NECK_MM:] = template_values
    body[:, :, NECK_MM:] = template_body

    ii, jj = np.meshgrid(np.arange(n_i), np.arange(n_j), indexing="ij")
    submental = template_body[:, :, BLEND_SLICES[1]]
    texture_rng = np.random.default_rng(20230214)
    smooth_noise = ndimage.gaussian_filter(
        texture_rng.standard_normal((n_i, n_j, NECK_MM + BLEND_SLICES[1])).astype(np.float32), 2.0
    )
    texture = 1.0 + 0.06 * smooth_noise / smooth_noise.std()
    low, high = BLEND_SLICES
    for k in range(-NECK_MM, high):
        neck_body, neck_values = _neck_slice(k, ii, jj, submental, column)
        if column == 0:
            neck_values = neck_values * texture[:, :, k + NECK_MM].astype(np.float32)
        else:
            neck_values = neck_values + 12.0 * (texture[:, :, k + NECK_MM] - 1.0) / 0.06
        e = k + NECK_MM
        if k < low:
            intensity[:, :, e] = neck_values
            body[:, :, e] = neck_body
        else:
            weight = (k - low) / (high - low)
            intensity[:, :, e] = weight * intensity[:, :, e] + (1 - weight) * neck_values
            body[:, :, e] |= neck_body

    affine = image.affine.copy()
    affine[:3, 3] -= affine[:3, 2] * NECK_MM
    return HeadPhantom(
        intensity=intensity,
        body=body,
        affine=affine,
        landmarks_index=_landmarks(body),
        modality=modality,
    )


def _most_anterior(body: np.ndarray, i: int, k: int) -> np.ndarray:
    column = np.nonzero(body[i, :, k])[0]
    return np.array([i, column.max(), k], dtype=float)


def _landmarks(body: np.ndarray) -> dict[str, np.ndarray]:
    landmarks = {
        name: _most_anterior(body, i, k + NECK_MM) for name, (i, k) in LANDMARK_RAYS.items()
    }
    low, high = NOSE_SEARCH_K
    candidates = [_most_anterior(body, MIDLINE_I, k + NECK_MM) for k in range(low, high + 1)]
    landmarks["nose_tip"] = max(candidates, key=lambda point: point[1])
    return landmarks
