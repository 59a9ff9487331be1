"""Were the eyes, nose and mouth removed? Judged at face landmarks.

Landmarks come from the synthetic cohort's ground truth when known, else from
the phantom template's landmarks carried into the scan by the same affine
registration the ``pydeface`` method uses. A region counts as removed when at
least half of the original's tissue within ``radius_mm`` of its landmark was
changed by the defacer (zeroed or refaced): "still covered by the patient's
own tissue" is what lets a face be recognised.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from defacing_assets.cohort.phantom import head_phantom, template_path
from defacing_assets.imaging.io import load_volume
from defacing_assets.imaging.resample import to_sitk
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.tissue import tissue_mask, tissue_threshold

REGION_RADIUS_MM = 6.0
REMOVED_FRACTION = 0.5
REGIONS = {"eyes": ("eye_left", "eye_right"), "nose": ("nose_tip",), "mouth": ("mouth",)}
_LPS = np.array([-1.0, -1.0, 1.0])


def landmarks_from_template(volume: Volume, seed: int) -> dict[str, list[float]]:
    """The template's face landmarks carried into the scan (world mm, RAS); ``seed`` is the
    study's, for the registration's sampling."""
    from defacing_assets.defacers.pydeface import register_template

    image = to_sitk(volume.with_array(volume.array.astype(np.float32)))
    template = to_sitk(load_volume(str(template_path())))
    transform = register_template(image, template, seed)  # scan point -> template point
    inverse = sitk.AffineTransform(transform.GetNthTransform(0)).GetInverse()
    phantom = head_phantom("MR")
    carried = {}
    for name, index in phantom.landmarks_index.items():
        world = phantom.affine[:3, :3] @ index + phantom.affine[:3, 3]
        scan_point = np.array(inverse.TransformPoint(tuple(world * _LPS))) * _LPS
        carried[name] = [round(float(v), 3) for v in scan_point]
    return carried


def _ball(volume: Volume, centre: list[float], radius_mm: float) -> tuple[tuple, np.ndarray]:
    """Index box around ``centre`` and the ball inside it (voxel grid of ``volume``)."""
    spacing = np.array(volume.spacing)
    middle = volume.world_to_voxel(centre)[0]
    reach = np.ceil(radius_mm / spacing).astype(int)
    low = np.maximum(np.floor(middle).astype(int) - reach, 0)
    high = np.minimum(np.ceil(middle).astype(int) + reach + 1, volume.shape)
    if np.any(high <= low):
        return tuple(slice(0, 0) for _ in range(3)), np.zeros((0, 0, 0), bool)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high, strict=True)], indexing="ij")
    points = np.stack(grids, -1).reshape(-1, 3)
    inside = np.linalg.norm(volume.voxel_to_world(points) - np.array(centre), axis=1) <= radius_mm
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    return box, inside.reshape(high - low)


def regions_removed(
    original: Volume,
    kept_mask: Volume,
    landmarks: dict[str, list[float]],
    modality: str,
    radius_mm: float = REGION_RADIUS_MM,
) -> dict[str, bool]:
    """``{"eyes": ..., "nose": ..., "mouth": ...}``: True when that region was removed.

    Eyes need both eyes removed. A landmark outside the field of view or with no
    tissue around it counts as removed (there is nothing left to recognise).
    """
    level = tissue_threshold(original, modality)
    # Faces are thin, partial-volume tissue: half the air/tissue threshold still counts on MR.
    tissue = tissue_mask(original, modality, level if modality == "CT" else 0.5 * level)
    changed = kept_mask.array == 0
    verdict = {}
    for region, names in REGIONS.items():
        removed = []
        for name in names:
            box, ball = _ball(original, landmarks[name], radius_mm)
            region_tissue = tissue[box] & ball
            count = int(region_tissue.sum())
            removed.append(count == 0 or changed[box][region_tissue].mean() >= REMOVED_FRACTION)
        verdict[region] = bool(all(removed))
    return verdict
