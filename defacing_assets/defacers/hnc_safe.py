"""``hnc_safe``: remove the face, keep every organ at risk.

Every published tool either left the face or cut into the OARs under the jaw
(the study's conclusion). This method finds the face the way ``pydeface``
does (pydeface's template registered to the scan, its face mask carried
over), but changes only a shell under the skin inside that face region and
never a voxel near an OAR:

1. ``face``: the carried face mask, where it says "remove", whole down to
   :data:`BELOW_MOUTH_MM` under the mouth, and below that, down to
   :data:`LOWER_FACE_MM`, only its outer :data:`LOWER_FACE_REACH_MM` (the lips
   and the chin's relief go; the jaw, the floor of the mouth and the tissue
   around the submandibular glands stay). Scan voxels outside the template's
   field of view are *not* face (no zero padding, unlike pydeface). Nothing
   deeper than :data:`REACH_MM` under the skin is ever changed.
2. ``shell``: face voxels from :data:`OUTER_MM` outside the skin to ``depth_mm``
   under it. Every shell voxel is changed.
3. Refacing (``fill="smooth"``, the default): inside the face, the head is
   replaced by its Gaussian-smoothed self (the half level of the head mask
   blurred by ``smoothing_mm``): no nose, lips or eye sockets, just a smooth
   tissue-coloured surface that fills hollows as well as cutting bumps.
   Shell voxels inside that surface get the median tissue intensity under the
   shell, voxels outside it get air; ``fill="blank"`` sets the whole shell to
   air instead.
4. Protection: voxels within ``margin_mm`` of any OAR label are never changed.
   Without labels, an atlas of the OARs (the synthetic cohort's OAR regions on
   the template, grown by :data:`ATLAS_SLACK_MM` for anatomical variation) is
   carried over by the same registration and protected instead.

The defaults come from measurements on the demo cohort (benchmarks/RESULTS.md,
``benchmarks/hnc_safe_depth.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from defacing_assets import __version__
from defacing_assets.cohort.phantom import head_phantom, template_path
from defacing_assets.cohort.synthetic import OAR_SPECS
from defacing_assets.defacers.base import Defacer, DefacingFailed, MethodOutput
from defacing_assets.defacers.pydeface import check_transform, register_template
from defacing_assets.imaging.io import load_volume
from defacing_assets.imaging.resample import to_sitk
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.tissue import tissue_mask, tissue_threshold

DEPTH_MM = 5.0
"""Default shell depth under the skin: with smooth refacing 5 mm passed QC on every demo
subject, 10 mm left a face on one of four (benchmarks/RESULTS.md)."""
MARGIN_MM = 5.0
"""Default protection margin around the OAR labels."""
SMOOTHING_MM = 25.0
"""Gaussian sigma of the refaced surface. An opening and closing with an 80 mm ball also hid
every face, but it pulled the whole face inwards (130 ml of tissue became air), and a model
trained on original noticed: 0.637 against 0.649 Dice, p 1e-6. The blurred surface (20 mm)
also fills the eye sockets and turns a quarter as much head into air; the same model scored
0.648 against 0.649, p 0.80. On the varied faces of the tuning cohort (seed 5), with the
lips-and-chin band, 20 mm left flat lips within 1.5 mm of the new surface on 2 of 9
subjects; 25 mm removed the mouth on 9 of 9 with 44% of the changed volume turned to air,
30 mm on 9 of 9 with 53% (benchmarks/hnc_safe_features.py). The model test has not been
repeated at 25 mm (benchmarks/RESULTS.md)."""
OUTER_MM = 3.0
"""Air this close outside the skin belongs to the shell: partial-volume skin is face too."""
BELOW_MOUTH_MM = 5.0
"""The face ends this far below the mouth. pydeface's mask reaches down under the jaw; refacing
there carved the chin away around the protected submandibular glands, and a model trained on
original lost 0.15-0.23 Dice on them; ending 15 mm below the mouth still cost 0.07, 5 mm
0.03 (benchmarks/RESULTS.md). The glands start about 20 mm below the mouth."""
REACH_MM = 20.0
"""No voxel deeper than this under the original skin changes: the jaw, tongue and floor of
the mouth stay. 20 mm halved the model's loss on the submandibular glands again; 12 mm
left a face dlib finds (0.85) on pydeface's template (benchmarks/RESULTS.md)."""
LOWER_FACE_MM = 45.0
"""Below the face's lower end the lips and chin continue this far under the template's
mouth (its chin ends about 35 mm under it; faces are longer or shorter)."""
LOWER_FACE_REACH_MM = 8.0
"""There only this outer layer changes: the lips and the chin's relief go while the jaw, the
floor of the mouth and everything a model reads around the submandibular glands stay (ending
the whole face 15 mm under the mouth cost an original-trained model 0.07 Dice on them)."""
ATLAS_SLACK_MM = 10.0
"""Growth of the atlas OAR regions for anatomy that differs from the template."""
CT_AIR_HU = -1000.0
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class FaceShell:
    """What refacing changes and with what, on the scan's grid."""

    changed: np.ndarray
    """bool, voxels given new values."""
    replacement: np.ndarray
    """float32, the new values (meaningful where ``changed``)."""
    protected: np.ndarray
    """bool, voxels that were never eligible (OARs and their margin)."""


def _axial_axis(volume: Volume) -> int:
    """The array axis closest to the world's superior direction."""
    return int(np.argmax(np.abs(volume.affine[:3, :3][2]) / np.array(volume.spacing)))


def head_mask(volume: Volume, modality: str) -> np.ndarray:
    """The head: largest tissue region, each axial slice's holes (airway, mouth) filled."""
    level = tissue_threshold(volume, modality)
    # Facial skin is thin, partial-volume tissue: on MR half the air/tissue threshold still
    # shows in a render (the same rule as the QC landmarks).
    tissue = tissue_mask(volume, modality, level if modality == "CT" else 0.5 * level)
    labelled, count = ndimage.label(tissue)
    if count > 1:
        sizes = ndimage.sum_labels(tissue, labelled, range(1, count + 1))
        tissue = labelled == (1 + int(np.argmax(sizes)))
    axis = _axial_axis(volume)
    filled = np.moveaxis(tissue, axis, 0).copy()
    for index in range(filled.shape[0]):
        filled[index] = ndimage.binary_fill_holes(filled[index])
    return np.moveaxis(filled, 0, axis)


def _signed_depth(head: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """mm under the skin inside the head, negative mm outside it."""
    inside = ndimage.distance_transform_edt(head, sampling=spacing)
    outside = ndimage.distance_transform_edt(~head, sampling=spacing)
    return np.where(head, inside, -outside).astype(np.float32)


def smooth_surface_head(
    head: np.ndarray, spacing: tuple[float, float, float], sigma_mm: float
) -> np.ndarray:
    """The half level of the head mask blurred by a Gaussian of ``sigma_mm``.

    Relief narrower than the blur goes: the nose and lips are cut down and the eye sockets
    filled, so each window a model reads loses far less tissue (a morphological opening
    only ever removes). Choosing the level that keeps the face's
    tissue volume exactly brought a face back on pydeface's template (benchmarks/RESULTS.md)."""
    sigma = [sigma_mm / s for s in spacing]
    # Pad so that the blur never meets the array's edge (the field of view is not skin).
    pad = [int(np.ceil(3 * g)) + 1 for g in sigma]
    padded = np.pad(head.astype(np.float32), [(p, p) for p in pad], mode="edge")
    blurred = ndimage.gaussian_filter(padded, sigma)
    return (blurred >= 0.5)[tuple(slice(p, -p) for p in pad)]


def near_labels(labels: np.ndarray, spacing: tuple[float, float, float], margin_mm: float):
    """Voxels within ``margin_mm`` of any labelled voxel (the labelled voxels included)."""
    if not np.any(labels > 0):
        return np.zeros(labels.shape, dtype=bool)
    return ndimage.distance_transform_edt(labels == 0, sampling=spacing) <= margin_mm


def _scan_to_template_world(
    volume: Volume, indices: np.ndarray, transform: sitk.Transform
) -> np.ndarray:
    """Scan voxel indices -> template world points (RAS mm) through the registration."""
    affine = sitk.AffineTransform(transform.GetNthTransform(0))
    matrix = np.array(affine.GetMatrix()).reshape(3, 3)
    centre = np.array(affine.GetCenter())
    translation = np.array(affine.GetTranslation())
    scan_lps = volume.voxel_to_world(indices) @ _LPS
    template_lps = (scan_lps - centre) @ matrix.T + centre + translation
    return template_lps @ _LPS


def atlas_oar_region(
    volume: Volume,
    candidates: np.ndarray,
    transform: sitk.Transform,
    margin_mm: float,
    slack_mm: float = ATLAS_SLACK_MM,
) -> np.ndarray:
    """Candidate voxels that fall in an atlas OAR region grown by margin and slack.

    Each OAR is the ellipsoid of its synthetic-cohort specification at the largest
    volume of its range, on the phantom (pydeface's template plus neck).
    """
    phantom = head_phantom("MR")
    indices = np.argwhere(candidates)
    protected = np.zeros(candidates.shape, dtype=bool)
    if indices.size == 0:
        return protected
    world = _scan_to_template_world(volume, indices, transform)
    inverse = np.linalg.inv(phantom.affine)
    # Specifications are template indices; the phantom's grid starts NECK_MM slices lower.
    template_index = world @ inverse[:3, :3].T + inverse[:3, 3] - [0.0, 0.0, phantom.k_offset]
    template_mm = np.linalg.norm(phantom.affine[:3, :3], axis=0)
    inside = np.zeros(len(indices), dtype=bool)
    for spec in OAR_SPECS.values():
        axes_mm = np.array(spec.semi_axes, dtype=float) * template_mm
        nominal_ml = 4.0 / 3.0 * np.pi * np.prod(axes_mm) / 1000.0
        axes_mm = axes_mm * (max(spec.volume_ml) / nominal_ml) ** (1 / 3)
        grown = axes_mm + margin_mm + slack_mm
        offset_mm = (template_index - np.array(spec.centre)) * template_mm
        inside |= np.sum((offset_mm / grown) ** 2, axis=1) <= 1.0
    protected[tuple(indices[inside].T)] = True
    return protected


@dataclass(frozen=True)
class FaceRegion:
    face: np.ndarray
    """bool, voxels refacing may change."""
    lower: np.ndarray
    """bool, the part of ``face`` under its lower end (lips, chin) where only
    :data:`LOWER_FACE_REACH_MM` under the skin may change."""


def face_region(
    volume: Volume,
    transform: sitk.Transform,
    below_mouth_mm: float = BELOW_MOUTH_MM,
    lower_face_mm: float = LOWER_FACE_MM,
) -> FaceRegion:
    """pydeface's face mask carried onto the scan, where it removes: whole down to
    ``below_mouth_mm`` under the template's mouth, its lower part down to ``lower_face_mm``
    (both measured along the template's axis)."""
    face_mask = to_sitk(load_volume(str(template_path("facemask.nii.gz"))))
    reference = to_sitk(volume.with_array(np.zeros(volume.shape, dtype=np.uint8)))
    carried = sitk.Resample(
        sitk.Cast(face_mask, sitk.sitkFloat32), reference, transform, sitk.sitkLinear, 1.0
    )
    face = sitk.GetArrayFromImage(carried).transpose(2, 1, 0) < 0.5
    phantom = head_phantom("MR")
    mouth = phantom.affine[:3, :3] @ phantom.landmarks_index["mouth"] + phantom.affine[:3, 3]
    indices = np.argwhere(face)
    superior = _scan_to_template_world(volume, indices, transform)[:, 2]
    lower = np.zeros(face.shape, dtype=bool)
    lower[tuple(indices[superior < mouth[2] - below_mouth_mm].T)] = True
    face[tuple(indices[superior < mouth[2] - max(lower_face_mm, below_mouth_mm)].T)] = False
    return FaceRegion(face=face, lower=lower & face)


def air_value(volume: Volume, modality: str) -> float:
    return CT_AIR_HU if modality == "CT" else float(min(volume.array.min(), 0))


def face_shell(
    volume: Volume,
    modality: str,
    region: FaceRegion,
    protected: np.ndarray,
    depth_mm: float = DEPTH_MM,
    fill: Literal["smooth", "blank"] = "smooth",
    smoothing_mm: float = SMOOTHING_MM,
) -> FaceShell:
    """The voxels refacing changes inside the face region and their new values."""
    face = region.face
    spacing = volume.spacing
    head = head_mask(volume, modality)
    depth = _signed_depth(head, spacing)
    shell = face & (depth >= -OUTER_MM) & (depth <= depth_mm)
    air = air_value(volume, modality)
    replacement = np.full(volume.shape, air, dtype=np.float32)
    if fill == "smooth":
        smooth = smooth_surface_head(head, spacing, smoothing_mm)
        beneath = face & head & (depth > depth_mm) & (depth <= depth_mm + 10.0) & ~protected
        tissue_value = float(np.median(volume.array[beneath])) if beneath.any() else air
        # The new face is the smooth head: what stands out of it (nose, lips) becomes air,
        # and a layer of depth_mm under it becomes tissue, which also seals the nostrils
        # and fills the eye sockets.
        under_new_surface = ndimage.distance_transform_edt(smooth, sampling=spacing) <= depth_mm
        outside_smooth = face & head & ~smooth
        filled = face & smooth & (shell | under_new_surface | ~head)
        replacement[filled] = tissue_value
        changed = shell | outside_smooth | filled
    else:
        changed = shell
    # What a model reads around the OARs stays, whatever the smooth surface cuts.
    changed &= depth <= np.where(region.lower, LOWER_FACE_REACH_MM, REACH_MM)
    return FaceShell(changed=changed & ~protected, replacement=replacement, protected=protected)


class HncSafe(Defacer):
    name = "hnc_safe"
    tool = "defacing_assets"
    uses_labels = True

    def __init__(
        self,
        depth_mm: float = DEPTH_MM,
        margin_mm: float = MARGIN_MM,
        fill: Literal["smooth", "blank"] = "smooth",
        smoothing_mm: float = SMOOTHING_MM,
        seed: int = 0,
        lower_face_mm: float = LOWER_FACE_MM,
    ) -> None:
        if fill not in ("smooth", "blank"):
            raise ValueError(f"fill must be 'smooth' or 'blank', got {fill!r}")
        if depth_mm <= 0 or margin_mm < 0 or smoothing_mm <= 0:
            raise ValueError(
                f"depth_mm and smoothing_mm must be positive and margin_mm not negative, got "
                f"depth_mm={depth_mm}, margin_mm={margin_mm}, smoothing_mm={smoothing_mm}"
            )
        self.depth_mm = depth_mm
        self.margin_mm = margin_mm
        self.fill = fill
        self.smoothing_mm = smoothing_mm
        self.seed = seed
        self.lower_face_mm = lower_face_mm

    def version(self) -> str:
        return (
            f"defacing_assets {__version__}, pydeface {metadata.version('pydeface')} template, "
            f"SimpleITK {sitk.Version.VersionString()}"
        )

    def compute(self, volume: Volume, modality: str, labels: Volume | None = None) -> MethodOutput:
        if labels is not None and not labels.same_grid(volume):
            raise ValueError(
                f"hnc_safe: labels grid {labels.shape} differs from the image {volume.shape}"
            )
        scan = to_sitk(volume.with_array(volume.array.astype(np.float32)))
        template = to_sitk(load_volume(str(template_path())))
        try:
            transform = register_template(scan, template, self.seed)
        except RuntimeError as error:
            raise DefacingFailed(f"registration failed: {error}") from None
        check_transform(transform)
        region = face_region(volume, transform, lower_face_mm=self.lower_face_mm)
        if labels is not None:
            protected = near_labels(np.asarray(labels.array), volume.spacing, self.margin_mm)
            protection = f"OAR labels + {self.margin_mm:g} mm"
        else:
            protected = atlas_oar_region(volume, region.face, transform, self.margin_mm)
            protection = f"atlas OAR regions + {self.margin_mm:g} mm + {ATLAS_SLACK_MM:g} mm slack"
        shell = face_shell(
            volume, modality, region, protected, self.depth_mm, self.fill, self.smoothing_mm
        )
        shell_ml = float(shell.changed.sum()) * volume.voxel_volume_ml
        return MethodOutput(
            kept_mask=~shell.changed,
            replacement=shell.replacement,
            command=(
                f"hnc_safe: pydeface template face region, {self.fill} refacing of a "
                f"{self.depth_mm:g} mm shell ({shell_ml:.1f} ml changed), protected: {protection}"
            ),
            details={
                "shell_ml": round(shell_ml, 3),
                "protected_ml": round(float(shell.protected.sum()) * volume.voxel_volume_ml, 3),
            },
        )
