"""Synthetic head-and-neck cohort: realistic enough for defacers, face QC and a U-Net.

No public HNC data can be downloaded where this platform must run, so it
ships a generator. Every subject is the phantom of :mod:`phantom` (pydeface's
average head plus a neck) with the eight OARs painted as smooth irregular
blobs, then warped by a per-subject affine and elastic deformation and
acquired in an HNC field of view with bias field and Rician noise.

OAR positions are template voxel indices (see :mod:`phantom` for the axes):
the parotids beside the mandibular ramus in front of the ear; the
submandibular glands under the body of the mandible toward the front, where
pydeface's face mask (everything anterior of j = 180) clips them; level II
nodes along the jugular from near the skull base to the hyoid (k = -12); level
III nodes below the hyoid down to the cricoid (k = -55), all of them below the
template's field of view (k < 0), which is why pydeface's zero padding erases
them.

Each subject's sampled parameters are returned and written beside it
(``subject.json``), so any subject can be replayed; the same seed and profile
give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from upath import UPath

from defacing_assets.cohort.face_shape import draw_face_shape, face_displacement, reshaped_source
from defacing_assets.cohort.labels import OAR_LABELS
from defacing_assets.cohort.phantom import MIDLINE_I, NECK_MM, HeadPhantom, head_phantom
from defacing_assets.cohort.scan import Modality, Scan
from defacing_assets.imaging.atomic import atomic_directory
from defacing_assets.imaging.io import volume_to_bytes
from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import get_profile


@dataclass(frozen=True)
class OarSpec:
    """Where and how big one OAR is painted (left side; right is mirrored)."""

    centre: tuple[float, float, float]
    """Template voxel index (i, j, k); k < 0 lies in the added neck."""
    semi_axes: tuple[float, float, float]
    """Initial ellipsoid semi-axes in voxels; rescaled to the drawn volume."""
    volume_ml: tuple[float, float]
    """Realistic range; per-subject volumes are drawn inside it."""
    mr: float
    """Intensity on the template's T1-like scale (soft tissue about 230)."""
    ct: float
    """Hounsfield units."""


_LEFT_SPECS = {
    "Glnd_Submand": OarSpec((60, 172, 6), (10, 12, 11), (6.0, 10.0), 290.0, 45.0),
    "LN_Neck_II": OarSpec((52, 128, 8), (7, 8, 20), (4.0, 10.0), 150.0, 30.0),
    "LN_Neck_III": OarSpec((54, 136, -36), (6, 7, 15), (2.0, 6.0), 150.0, 30.0),
    "Parotid": OarSpec((30, 132, 42), (10, 14, 22), (20.0, 30.0), 340.0, -15.0),
}


def _mirror(spec: OarSpec) -> OarSpec:
    i, j, k = spec.centre
    return OarSpec((2 * MIDLINE_I - i, j, k), spec.semi_axes, spec.volume_ml, spec.mr, spec.ct)


OAR_SPECS: dict[str, OarSpec] = {
    name: (_LEFT_SPECS[name[:-2]] if name.endswith("_L") else _mirror(_LEFT_SPECS[name[:-2]]))
    for name in OAR_LABELS
}
_PAINT_ORDER = [
    "Parotid_L",
    "Parotid_R",
    "Glnd_Submand_L",
    "Glnd_Submand_R",
    "LN_Neck_II_L",
    "LN_Neck_II_R",
    "LN_Neck_III_L",
    "LN_Neck_III_R",
]

SOFT_TISSUE = 230.0
"""Soft-tissue level of the phantom's MR scale."""
MR_OUTPUT_SCALE = 400.0 / SOFT_TISSUE
"""Written MR images have soft tissue near 400 (int16)."""
POSE_SD_DEG = 5.0
MAX_POSE_DEG = 15.0
"""Head pose (pitch, yaw, roll): normal with this spread, cut at 15 degrees."""
NECK_FOV_BOTTOM_K = (-105.0, -65.0)
"""How much neck: the lowest slice, template index (the level III nodes end near -55)."""
SHORT_FOV_BOTTOM_K = {"mouth": (24.0, 30.0), "nose": (44.0, 48.0)}
"""Fields of view ending just under the lower lip or the nose (no neck OARs there)."""
ELASTIC_GRID_MM = 25.0
ELASTIC_SD_MM = 2.0
_SHAPE_GRID = 24
_SHAPE_EXTENT = 1.6


def _rotation(degrees: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _field_of_view(rng: np.random.Generator, short_fov_share: float) -> tuple[str, float]:
    """Where the field of view ends below: somewhere in the lower neck, or (for a share of
    subjects) just under the mouth or the nose, as on a brain scan. Both numbers are always
    drawn, so the share changes no other subject parameter."""
    roll, position = rng.uniform(size=2)
    if roll < short_fov_share / 2:
        low, high = SHORT_FOV_BOTTOM_K["nose"]
        return "nose", round(float(low + position * (high - low)), 2)
    if roll < short_fov_share:
        low, high = SHORT_FOV_BOTTOM_K["mouth"]
        return "mouth", round(float(low + position * (high - low)), 2)
    low, high = NECK_FOV_BOTTOM_K
    return "neck", round(float(low + position * (high - low)), 2)


def _draw_parameters(rng: np.random.Generator, modality: Modality, short_fov_share: float) -> dict:
    """Every random choice for one subject, as plain numbers (written to subject.json)."""
    oars = {}
    for name in _PAINT_ORDER:
        low, high = OAR_SPECS[name].volume_ml
        margin = 0.2 * (high - low)
        oars[name] = {
            "centre_shift_vox": np.clip(rng.normal(0, 1.5, 3), -3, 3).round(3).tolist(),
            "axis_factors": rng.uniform(0.85, 1.15, 3).round(4).tolist(),
            "volume_ml": round(float(rng.uniform(low + margin, high - margin)), 3),
            "intensity_factor": round(float(rng.uniform(0.9, 1.1)), 4),
            "shape_seed": int(rng.integers(2**31)),
        }
    fov_kind, fov_bottom_k = _field_of_view(rng, short_fov_share)
    return {
        "modality": modality,
        "face": draw_face_shape(rng),
        "scales": rng.uniform(0.88, 1.12, 3).round(4).tolist(),
        "rotation_deg": np.clip(rng.normal(0, POSE_SD_DEG, 3), -MAX_POSE_DEG, MAX_POSE_DEG)
        .round(3)
        .tolist(),
        "translation_mm": rng.uniform(-6, 6, 3).round(3).tolist(),
        "elastic_seed": int(rng.integers(2**31)),
        "contrast_gamma": round(float(rng.uniform(0.85, 1.15)), 4),
        "bias_coefficients": rng.normal(0, 0.08, 9).round(4).tolist(),
        "noise_fraction": round(float(rng.uniform(0.015, 0.03)), 4),
        "noise_seed": int(rng.integers(2**31)),
        "fov_half_width_vox": round(float(rng.uniform(95, 100)), 2),
        "fov_kind": fov_kind,
        "fov_bottom_k": fov_bottom_k,
        "fov_top_k": round(float(rng.uniform(112, 150)), 2),
        "oars": oars,
    }


def _subject_affine(params: dict, phantom: HeadPhantom) -> np.ndarray:
    """Template world -> subject world: scale and rotate about the head, then shift."""
    centre = phantom.affine @ np.array([MIDLINE_I, 128, 40 + NECK_MM, 1.0])
    linear = _rotation(np.array(params["rotation_deg"])) @ np.diag(params["scales"])
    transform = np.eye(4)
    transform[:3, :3] = linear
    transform[:3, 3] = centre[:3] - linear @ centre[:3] + np.array(params["translation_mm"])
    return transform


def _paint_oar(
    name: str,
    oar: dict,
    volume_scale: float,
    phantom: HeadPhantom,
    intensity: np.ndarray,
    labels: np.ndarray,
    inner_body: np.ndarray,
) -> None:
    spec = OAR_SPECS[name]
    centre = np.array(spec.centre, float) + np.array(oar["centre_shift_vox"])
    centre[2] += NECK_MM
    axes = np.array(spec.semi_axes, float) * np.array(oar["axis_factors"])
    shape_rng = np.random.default_rng(oar["shape_seed"])
    roughness = ndimage.gaussian_filter(shape_rng.standard_normal((_SHAPE_GRID,) * 3), 2.5)
    roughness = 0.15 * roughness / roughness.std()
    voxel_ml = abs(np.linalg.det(phantom.affine[:3, :3])) / 1000.0
    target_voxels = oar["volume_ml"] / volume_scale / voxel_ml
    label = OAR_LABELS[name]
    for _ in range(3):
        low = np.maximum(np.floor(centre - _SHAPE_EXTENT * axes).astype(int), 0)
        high = np.minimum(np.ceil(centre + _SHAPE_EXTENT * axes).astype(int) + 1, labels.shape)
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        ranges = [np.arange(a, b) for a, b in zip(low, high, strict=True)]
        grid = np.stack(np.meshgrid(*ranges, indexing="ij"))
        normalised = (grid - centre[:, None, None, None]) / axes[:, None, None, None]
        shape_index = (normalised + _SHAPE_EXTENT) / (2 * _SHAPE_EXTENT) * (_SHAPE_GRID - 1)
        bump = ndimage.map_coordinates(roughness, shape_index, order=1, mode="nearest")
        blob = np.sum(normalised**2, axis=0) <= (1.0 + bump) ** 2
        blob &= inner_body[box] & (labels[box] == 0)
        painted = int(blob.sum())
        if painted == 0:
            raise RuntimeError(f"{name} fell outside the body; check OAR_SPECS")
        ratio = target_voxels / painted
        if abs(ratio - 1.0) < 0.01:
            break
        axes = axes * ratio ** (1 / 3)
    value = (spec.mr if phantom.modality == "MR" else spec.ct) * oar["intensity_factor"]
    weight = ndimage.gaussian_filter(blob.astype(np.float32), 0.8)
    region = intensity[box]
    texture = 1.0 + 0.04 * bump / max(float(np.abs(bump).max()), 1e-6)
    intensity[box] = region * (1 - weight) + (value * texture) * weight
    labels[box][blob] = label


def _output_grid(params: dict, phantom: HeadPhantom, spacing) -> Volume:
    half = params["fov_half_width_vox"]
    corners_index = np.array(
        [
            [MIDLINE_I + si * half, j, k + NECK_MM]
            for si in (-1, 1)
            for j in (15, 262)
            for k in (params["fov_bottom_k"], params["fov_top_k"])
        ]
    )
    corners = corners_index @ phantom.affine[:3, :3].T + phantom.affine[:3, 3]
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = np.array(spacing, float)
    shape = np.ceil((high - low) / spacing).astype(int)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = low + spacing / 2
    return Volume(np.zeros(tuple(shape), dtype=np.uint8), affine)


class _ElasticField:
    """Smooth random displacement (mm) on a coarse grid, linearly interpolated."""

    def __init__(self, seed: int, grid: Volume) -> None:
        extent = np.array(grid.shape) * np.array(grid.spacing)
        shape = np.ceil(extent / ELASTIC_GRID_MM).astype(int) + 2
        rng = np.random.default_rng(seed)
        self.field = rng.normal(0, ELASTIC_SD_MM, (3, *shape))
        self.origin = grid.affine[:3, 3] - ELASTIC_GRID_MM / 2

    def jacobian(self, point: np.ndarray, radius_mm: float = 10.0) -> float:
        """Mean det(I + grad u) over a small cube around ``point`` (local volume change)."""
        offsets = np.array(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij")).reshape(3, -1).T
        determinants = []
        step = 1.0
        for offset in offsets * radius_mm:
            centre = point + offset
            gradient = np.stack(
                [
                    (self(centre[None] + step * e)[0] - self(centre[None] - step * e)[0])
                    / (2 * step)
                    for e in np.eye(3)
                ],
                axis=1,
            )
            determinants.append(np.linalg.det(np.eye(3) + gradient))
        return float(np.mean(determinants))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        index = ((points - self.origin) / ELASTIC_GRID_MM).T
        return np.stack(
            [ndimage.map_coordinates(c, index, order=1, mode="nearest") for c in self.field], axis=1
        )


def _bias_field(coefficients: list[float], shape) -> np.ndarray:
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [x, y, z, x * y, y * z, x * z, x * x, y * y, z * z]
    return np.exp(sum(c * t for c, t in zip(coefficients, terms, strict=True))).astype(np.float32)


def generate_subject(
    subject_id: str,
    index: int,
    seed: int,
    profile: str = "demo",
    modality: Modality = "MR",
    short_fov_share: float = 0.0,
) -> tuple[Scan, dict]:
    """One synthetic subject and the parameters that produced it; ``short_fov_share`` of
    subjects have a field of view that ends at the mouth or the nose (no neck)."""
    if not 0.0 <= short_fov_share <= 1.0:
        raise ValueError(f"short_fov_share must be within 0..1, got {short_fov_share}")
    spacing = get_profile(profile).spacing
    rng = np.random.default_rng([seed, index])
    params = _draw_parameters(rng, modality, short_fov_share)
    phantom = head_phantom(modality)

    intensity = phantom.intensity.copy()
    if modality == "MR":
        gamma = params["contrast_gamma"]
        np.power(np.maximum(intensity, 0) / SOFT_TISSUE, gamma, out=intensity)
        intensity *= SOFT_TISSUE
    labels = np.zeros(intensity.shape, dtype=np.uint8)
    inner_body = ndimage.binary_erosion(phantom.body, iterations=3)
    transform = _subject_affine(params, phantom)
    grid = _output_grid(params, phantom, spacing)
    elastic = _ElasticField(params["elastic_seed"], grid)
    for name in _PAINT_ORDER:
        # Subject volume = template volume * |det A| / det(I + grad u): paint for the target.
        centre = np.array(OAR_SPECS[name].centre, float) + [0, 0, NECK_MM]
        subject_centre = _to_subject(
            phantom.affine[:3, :3] @ centre + phantom.affine[:3, 3], transform, elastic
        )
        volume_scale = abs(np.linalg.det(transform[:3, :3])) / elastic.jacobian(subject_centre)
        _paint_oar(name, params["oars"][name], volume_scale, phantom, intensity, labels, inner_body)
    to_phantom_index = np.linalg.inv(phantom.affine) @ np.linalg.inv(transform)
    background = 0.0 if modality == "MR" else -1000.0
    image = np.empty(grid.shape, dtype=np.float32)
    label_map = np.empty(grid.shape, dtype=np.uint8)
    ii, jj = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
    slab = max(1, 2_000_000 // (grid.shape[0] * grid.shape[1]))
    for k0 in range(0, grid.shape[2], slab):
        k1 = min(k0 + slab, grid.shape[2])
        kk = np.arange(k0, k1)
        voxels = np.stack(np.broadcast_arrays(ii[..., None], jj[..., None], kk[None, None, :]), -1)
        points = grid.voxel_to_world(voxels.reshape(-1, 3))
        moved = points + elastic(points)
        source = reshaped_source(
            moved @ to_phantom_index[:3, :3].T + to_phantom_index[:3, 3], params["face"], phantom
        ).T
        out_shape = (grid.shape[0], grid.shape[1], k1 - k0)
        image[:, :, k0:k1] = ndimage.map_coordinates(
            intensity, source, order=1, mode="constant", cval=background
        ).reshape(out_shape)
        label_map[:, :, k0:k1] = ndimage.map_coordinates(
            labels, source, order=0, mode="constant", cval=0
        ).reshape(out_shape)

    noise_rng = np.random.default_rng(params["noise_seed"])
    if modality == "MR":
        image *= _bias_field(params["bias_coefficients"], grid.shape) * MR_OUTPUT_SCALE
        sigma = params["noise_fraction"] * SOFT_TISSUE * MR_OUTPUT_SCALE
        real = image + noise_rng.normal(0, sigma, image.shape).astype(np.float32)
        imaginary = noise_rng.normal(0, sigma, image.shape).astype(np.float32)
        image = np.sqrt(real**2 + imaginary**2)
        stored = np.clip(np.round(image), 0, 32767).astype(np.int16)
    else:
        image += noise_rng.normal(0, 10.0, image.shape).astype(np.float32)
        stored = np.clip(np.round(image), -1024, 3071).astype(np.int16)

    landmarks = _landmarks_in_subject(phantom, params["face"], transform, elastic)
    scan = Scan(
        subject_id=subject_id,
        image=Volume(stored, grid.affine),
        labels=Volume(label_map, grid.affine),
        modality=modality,
        landmarks=landmarks,
        source={"format": "synthetic", "seed": seed, "index": index, "profile": profile},
    )
    return scan, params


def _to_subject(template_world: np.ndarray, transform: np.ndarray, elastic) -> np.ndarray:
    """Carry a template point forward: solve p + u(p) = A q by fixed-point iteration."""
    target = transform[:3, :3] @ template_world + transform[:3, 3]
    point = target.copy()
    for _ in range(30):
        point = target - elastic(point[None])[0]
    return point


def _landmarks_in_subject(phantom: HeadPhantom, face: dict, transform: np.ndarray, elastic) -> dict:
    landmarks = {}
    for name, index in phantom.landmarks_index.items():
        index = index + face_displacement(index[None], face, phantom)[0]
        template_world = phantom.affine[:3, :3] @ index + phantom.affine[:3, 3]
        point = _to_subject(template_world, transform, elastic)
        landmarks[name] = [round(float(v), 3) for v in point]
    return landmarks


def write_subject(scan: Scan, params: dict, folder: str | Path | UPath) -> UPath:
    """Write in the NIfTI layout the readers accept: image, label map, landmarks, parameters."""
    folder = UPath(folder)
    with atomic_directory(folder) as staging:
        (staging / "image.nii.gz").write_bytes(volume_to_bytes(scan.image))
        (staging / "label.nii.gz").write_bytes(volume_to_bytes(scan.labels))
        (staging / "landmarks.json").write_text(
            json.dumps(scan.landmarks, indent=1, sort_keys=True)
        )
        record = {"modality": scan.modality, "synthetic": {**scan.source, "parameters": params}}
        (staging / "subject.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return folder


def write_cohort(
    out: str | Path | UPath,
    n_subjects: int,
    seed: int = 0,
    profile: str = "demo",
    modality: Modality = "MR",
    prefix: str = "SYN",
    short_fov_share: float = 0.0,
) -> list[str]:
    """Generate ``n_subjects`` subjects into ``out/<id>/``; returns the ids."""
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    if modality not in ("MR", "CT"):
        raise ValueError(f"modality must be 'MR' or 'CT', got {modality!r}")
    ids = []
    for index in range(n_subjects):
        subject_id = f"{prefix}{index + 1:03d}"
        scan, params = generate_subject(subject_id, index, seed, profile, modality, short_fov_share)
        write_subject(scan, params, UPath(out) / subject_id)
        ids.append(subject_id)
    return ids
