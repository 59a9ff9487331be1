"""Read one clinical DICOM subject (an MR/CT series plus its RTSTRUCT) into a Scan.

Clinical exports arrive as a folder of arbitrarily named files, so the series and the
structure set are found by their headers, and the series is the one the RTSTRUCT was drawn
on. The image goes through SimpleITK, the one place that works out DICOM geometry; contours
are rasterised in world coordinates onto that image's own grid, so axis and slice order cannot
disagree between image and labels.

Contours are rasterised here rather than with rt-utils' ``get_roi_mask_by_name``: rt-utils
1.2.7 allocates its masks as (Columns, Rows) but fills them as (row, column), which clips
structures in non-square images, and it swaps the two PixelSpacing values. Rasterisation
follows rt-utils' convention otherwise (cv2.fillPoly, boundary pixels included), so
structure sets written by rt-utils read back voxel for voxel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from defacing_assets.cohort.labels import LABEL_NAMES, OAR_LABELS, label_for_roi
from defacing_assets.cohort.scan import Modality, Scan
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.resample import from_sitk
from defacing_assets.imaging.volume import Volume

_NOT_IMAGES = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "SEG", "REG", "PR", "SR"}
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_SUBPIXEL_BITS = 8
"""Contour vertices keep 1/256 voxel precision when filled (cv2.fillPoly ``shift``)."""
_SPACING_TOLERANCE = 0.01
"""Gaps between slices may differ from the median gap by this fraction."""


@dataclass(frozen=True)
class _Header:
    path: Path
    ds: Dataset


def read_dicom_subject(
    folder: str | Path,
    subject_id: str,
    roi_table: Mapping[str, int] | None = None,
) -> Scan:
    """Read the image series and RTSTRUCT in ``folder`` (searched recursively).

    Args:
        folder: one subject's export: a single RTSTRUCT and the series it was drawn on
            (other series may be present); files may have any name.
        subject_id: the Scan's id.
        roi_table: site-specific ROI names to label values, passed to
            :func:`label_for_roi`; a value of 0 drops that ROI.

    Returns:
        A Scan with a float32 image and a uint8 label map on the same grid. OARs that are
        missing from the RTSTRUCT, or whose contours hold no voxels, are listed in
        ``absent_structures``. Where ROIs of different OARs overlap, the one listed first
        keeps the voxel. ``source["rois"]`` names the ROI each OAR was taken from.

    Raises:
        InvalidScanError: naming the folder or file, when there are no DICOM files, no RTSTRUCT
            or no image series, when the RTSTRUCT references a series that is not there, or
            when the series cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidScanError(str(folder), "is not a folder")
    headers = list(_dicom_headers(folder))
    if not headers:
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        raise InvalidScanError(
            str(folder),
            f"no DICOM files found; {len(files)} file(s) here are not DICOM: {shown}"
            if files
            else "no DICOM files found",
        )

    rtstructs = [h for h in headers if _modality(h.ds) == "RTSTRUCT"]
    series: dict[str, list[_Header]] = defaultdict(list)
    for header in headers:
        if _is_image(header.ds):
            series[str(header.ds.SeriesInstanceUID)].append(header)

    if not rtstructs:
        raise InvalidScanError(
            str(folder), f"no RTSTRUCT file found among {len(headers)} DICOM files"
        )
    if len(rtstructs) > 1:
        names = ", ".join(str(h.path.relative_to(folder)) for h in rtstructs)
        raise InvalidScanError(
            str(folder), f"found {len(rtstructs)} RTSTRUCT files ({names}); expected one"
        )
    rtstruct = rtstructs[0]
    _check_rtstruct(rtstruct)
    if not series:
        raise InvalidScanError(str(folder), "no image series found (only non-image DICOM files)")

    series_uid = _referenced_series(rtstruct, series)
    image = _read_series(folder, series_uid, series[series_uid])
    labels, roi_names = _rasterise(rtstruct, image, roi_table)
    present = set(np.unique(labels.array).tolist())
    modality: Modality = "CT" if _modality(series[series_uid][0].ds) == "CT" else "MR"
    return Scan(
        subject_id=subject_id,
        image=image,
        labels=labels,
        modality=modality,
        absent_structures=[name for name, label in OAR_LABELS.items() if label not in present],
        source={
            "format": "dicom",
            "folder": str(folder),
            "rtstruct": str(rtstruct.path),
            "series_uid": series_uid,
            "rois": roi_names,
        },
    )


def read_dicom_series(folder: str | Path, spacing_tolerance: float = _SPACING_TOLERANCE) -> Volume:
    """The one image series in ``folder`` (no RTSTRUCT needed), as a float32 Volume.

    ``spacing_tolerance``: how far (a fraction) gaps between slices may differ from their
    median; raise it for headers that round positions (0.1 mm on 7 mm gaps is 1.4 %).

    Raises:
        InvalidScanError: when the folder holds no image series or more than one, or the
            series cannot be read (see :func:`read_dicom_subject`).
    """
    folder = Path(folder)
    series: dict[str, list[_Header]] = defaultdict(list)
    for header in _dicom_headers(folder):
        if _is_image(header.ds):
            series[str(header.ds.SeriesInstanceUID)].append(header)
    if len(series) != 1:
        raise InvalidScanError(str(folder), f"holds {len(series)} image series; expected one")
    ((series_uid, members),) = series.items()
    return _read_series(folder, series_uid, members, spacing_tolerance)


def _dicom_headers(folder: Path) -> Iterator[_Header]:
    """Every DICOM file under ``folder``, headers only; anything else is skipped."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue  # not DICOM: notes, exports' index files and the like
        except Exception as error:
            raise InvalidScanError(str(path), f"unreadable DICOM file ({error})") from error
        if "SOPClassUID" in ds or "Modality" in ds:
            yield _Header(path, ds)


def _modality(ds: Dataset) -> str:
    return str(ds.get("Modality", "")).upper()


def _is_image(ds: Dataset) -> bool:
    needed = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows")
    return _modality(ds) not in _NOT_IMAGES and all(tag in ds for tag in needed)


def _check_rtstruct(rtstruct: _Header) -> None:
    """Refuse structure sets missing required parts (as a truncated file reads)."""
    ds = rtstruct.ds
    for keyword in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        if keyword not in ds:
            raise InvalidScanError(str(rtstruct.path), f"RTSTRUCT has no {keyword} (truncated?)")
    for roi in ds.ROIContourSequence:
        if "ReferencedROINumber" not in roi:
            raise InvalidScanError(
                str(rtstruct.path), "RTSTRUCT has contours without a ReferencedROINumber"
            )
        for contour in roi.get("ContourSequence", []):
            n_values = int(np.size(contour.get("ContourData", [])))
            if n_values == 0 or n_values % 3:
                raise InvalidScanError(
                    str(rtstruct.path),
                    f"RTSTRUCT has a contour of ROI {roi.ReferencedROINumber} with "
                    f"{n_values} coordinates (not a list of x, y, z points)",
                )


def _referenced_series(rtstruct: _Header, series: Mapping[str, list[_Header]]) -> str:
    """The UID of the series the RTSTRUCT was drawn on, which must be in ``series``."""
    ds = rtstruct.ds
    referenced: set[str] = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in item:
                    referenced.add(str(item.SeriesInstanceUID))
    if not referenced:  # the series reference is optional; the contours' images are not
        series_of_sop = {
            str(h.ds.SOPInstanceUID): uid for uid, members in series.items() for h in members
        }
        for roi in ds.get("ROIContourSequence", []):
            for contour in roi.get("ContourSequence", []):
                for image in contour.get("ContourImageSequence", []):
                    sop = str(image.get("ReferencedSOPInstanceUID", ""))
                    if sop in series_of_sop:
                        referenced.add(series_of_sop[sop])

    if not referenced:
        if len(series) == 1:
            return next(iter(series))
        raise InvalidScanError(
            str(rtstruct.path),
            f"RTSTRUCT does not say which of the {len(series)} image series it belongs to",
        )
    matching = sorted(referenced & set(series))
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise InvalidScanError(
            str(rtstruct.path),
            f"RTSTRUCT references series {', '.join(sorted(referenced))}, which is not in the "
            f"folder (image series found: {', '.join(sorted(series))})",
        )
    raise InvalidScanError(
        str(rtstruct.path), f"RTSTRUCT references {len(matching)} of the image series present"
    )


def _read_series(
    folder: Path,
    series_uid: str,
    members: list[_Header],
    spacing_tolerance: float = _SPACING_TOLERANCE,
) -> Volume:
    """Read one series with SimpleITK, slices ordered along the slice normal."""
    first = members[0].ds
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidScanError(
            str(members[0].path), "multi-frame (enhanced) DICOM images are not supported"
        )
    try:
        orientations = np.array(
            [[float(v) for v in h.ds.ImageOrientationPatient] for h in members], dtype=float
        )
        positions = np.array(
            [[float(v) for v in h.ds.ImagePositionPatient] for h in members], dtype=float
        )
    except (TypeError, ValueError) as error:
        raise InvalidScanError(
            str(folder), f"series {series_uid} has unreadable geometry ({error})"
        ) from None
    if orientations.shape[1:] != (6,) or positions.shape[1:] != (3,):
        raise InvalidScanError(str(folder), f"series {series_uid} has malformed geometry")
    orientation = orientations[0]
    for header, other in zip(members, orientations, strict=True):
        same_size = (header.ds.Rows, header.ds.Columns) == (first.Rows, first.Columns)
        if not same_size or not np.allclose(other, orientation, atol=1e-4):
            raise InvalidScanError(
                str(header.path),
                f"slice size or orientation differs from the rest of series {series_uid}",
            )
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    files = [str(members[i].path) for i in order]
    _check_stack(folder, series_uid, positions, normal, spacing_tolerance)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise InvalidScanError(
            str(folder), f"cannot read image series {series_uid} ({message})"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidScanError(str(folder), f"series {series_uid} is not a greyscale image")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    volume = from_sitk(image)
    return volume.with_array(volume.array.astype(np.float32))


def _check_stack(
    folder: Path,
    series_uid: str,
    positions: np.ndarray,
    normal: np.ndarray,
    spacing_tolerance: float = _SPACING_TOLERANCE,
) -> None:
    """Refuse stacks SimpleITK would put on a wrong grid: repeats, gaps, tilted stacks."""
    if len(positions) < 2:
        return
    gaps = np.diff(positions @ normal)
    if np.any(gaps < 1e-3):
        raise InvalidScanError(
            str(folder),
            f"series {series_uid} has several slices at the same position "
            "(multiple echoes, phases or duplicates)",
        )
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > spacing_tolerance * median:
        raise InvalidScanError(
            str(folder),
            f"series {series_uid} has uneven slice gaps ({gaps.min():.3g} to "
            f"{gaps.max():.3g} mm): missing slices?",
        )
    stack = positions[-1] - positions[0]
    if np.linalg.norm(np.cross(stack / np.linalg.norm(stack), normal)) > 1e-3:
        raise InvalidScanError(
            str(folder),
            f"series {series_uid} is not stacked along its slice normal (gantry tilt?)",
        )


def _rasterise(
    rtstruct: _Header, image: Volume, roi_table: Mapping[str, int] | None
) -> tuple[Volume, dict[str, str]]:
    """A uint8 label map on ``image``'s grid, and which ROI name became which OAR.

    Each label comes from one ROI. Derived structures (``Parotid_L_PRV``, ``Parotid_L-PTV``)
    match the same label as the organ, so an exact name (in ``roi_table`` or canonical) is
    preferred, then the shortest name, then the first listed.
    """
    ds = rtstruct.ds
    contours_of = {
        str(item.get("ReferencedROINumber", "")): item.get("ContourSequence", [])
        for item in ds.get("ROIContourSequence", [])
    }
    exact_names = {name.lower() for name in (*OAR_LABELS, *(roi_table or {}))}
    chosen: dict[int, tuple[tuple[bool, int, int], Dataset]] = {}
    for position, roi in enumerate(ds.get("StructureSetROISequence", [])):
        name = str(roi.get("ROIName", ""))
        label = label_for_roi(name, roi_table)
        if not label:
            continue
        if label not in LABEL_NAMES:
            raise ValueError(f"roi_table maps {name!r} to {label}, which is not an OAR label")
        rank = (name.lower() not in exact_names, len(name), position)
        if label not in chosen or rank < chosen[label][0]:
            chosen[label] = (rank, roi)

    world_to_voxel = np.linalg.inv(image.affine)
    labels = np.zeros(image.shape, dtype=np.uint8)
    sources: dict[str, str] = {}
    for label, (_, roi) in sorted(chosen.items(), key=lambda item: item[1][0][2]):
        contours = contours_of.get(str(roi.get("ROINumber", "")), [])
        mask = _roi_mask(contours, image, world_to_voxel)
        labels[mask & (labels == 0)] = label  # overlaps: the ROI listed first keeps the voxel
        sources[LABEL_NAMES[label]] = str(roi.ROIName)
    return image.with_array(labels), sources


def _roi_mask(contours: list[Dataset], image: Volume, world_to_voxel: np.ndarray) -> np.ndarray:
    """Fill each closed contour in its slice; contours sharing a slice are XORed (holes)."""
    n_i, n_j, n_k = image.shape
    mask = np.zeros(image.shape, dtype=bool)
    for contour in contours:
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
            continue
        # One or two points still mark voxels: rt-utils writes thin tips that way.
        world = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3) * _LPS_TO_RAS
        voxels = world @ world_to_voxel[:3, :3].T + world_to_voxel[:3, 3]
        k = int(np.rint(voxels[:, 2].mean()))
        if not 0 <= k < n_k or np.ptp(voxels[:, 2]) > 0.5:
            continue  # off the grid, or not in one of the image's slice planes
        points = np.rint(voxels[:, :2] * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        plane = np.zeros((n_j, n_i), dtype=np.uint8)  # cv2 images are (y, x) = (j, i)
        cv2.fillPoly(plane, [points.reshape(-1, 1, 2)], 1, cv2.LINE_8, _SUBPIXEL_BITS)
        mask[:, :, k] ^= plane.T.astype(bool)
    return mask
