"""Write a small but real DICOM case (image series + RTSTRUCT) from Volumes, for reader tests.

The series is written slice by slice with pydicom from the Volume's RAS affine (converted to
DICOM's LPS), and the RTSTRUCT is made by rt-utils from the label map, so the reader is tested
against files produced by the same library family that clinical exports are read with.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from rt_utils import RTStructBuilder

from defacing_assets.imaging.volume import Volume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
CT_INTERCEPT = -1024.0
"""Rescale intercept the CT fixture stores its values with (slope 1)."""


def _ds_number(value: float) -> str:
    """A decimal-string (DS) value: as precise as its 16 characters allow."""
    if abs(value) < 1e-9:  # rounding noise from rotations
        return "0"
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return "0" if float(text) == 0 else text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def _slice_dataset(
    pixels: np.ndarray,
    position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    index: int,
    modality: str,
    uids: dict[str, str],
) -> Dataset:
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    sop_instance = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.Modality = modality
    ds.PatientName = "Synthetic^Subject"
    ds.PatientID = uids["patient_id"]
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.StudyID = "1"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20240101"
    ds.SeriesTime = "120000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.SeriesDescription = f"synthetic {modality}"
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
    ds.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
    ds.SliceThickness = _ds_number(slice_thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = _ds_number(CT_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def write_dicom_case(
    folder: str | Path,
    image: Volume,
    labels: Volume,
    roi_names: dict[int, str],
    modality: str = "MR",
    *,
    extra_rois: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``image`` as a series in ``folder/series/``, ``labels`` as ``folder/rtstruct.dcm``.

    One file per slice (array axis 2), with deliberately uninformative, shuffled file names so
    readers cannot rely on them. Array axis 0 runs along the DICOM row direction (the column
    index), axis 1 along the column direction (the row index). Values are stored as 16-bit
    unsigned integers: rounded for MR, with intercept :data:`CT_INTERCEPT` for CT. Each label
    value in ``roi_names`` becomes one ROI of that name; ``extra_rois`` adds further ROIs from
    boolean masks on the same grid, after those (for overlaps and non-OAR structures).

    The image affine must have orthogonal in-plane axes and, to round-trip exactly, a slice axis
    along the normal (a right-handed grid in LPS); a left-handed grid comes back with its slice
    axis reversed, as any DICOM reader sorts slices along the normal. rt-utils' contour writer
    also assumes square pixels, so keep the in-plane spacing isotropic.
    """
    if not image.same_grid(labels):
        raise ValueError("image and labels must share a grid")
    if modality not in ("MR", "CT"):
        raise ValueError(f"modality must be MR or CT, got {modality!r}")
    folder = Path(folder)
    series_dir = folder / "series"
    series_dir.mkdir(parents=True, exist_ok=True)

    lps = _RAS_TO_LPS @ image.affine[:3, :3]
    origin = _RAS_TO_LPS @ image.affine[:3, 3]
    spacing = np.linalg.norm(lps, axis=0)
    row_direction, column_direction = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    if abs(float(row_direction @ column_direction)) > 1e-6:
        raise ValueError("the image's in-plane axes are not orthogonal")
    normal = np.cross(row_direction, column_direction)
    slice_thickness = abs(float(lps[:, 2] @ normal))

    if modality == "CT":
        stored = np.rint(image.array.astype(np.float64) - CT_INTERCEPT)
    else:
        stored = np.rint(image.array.astype(np.float64))
    stored = np.clip(stored, 0, np.iinfo(np.uint16).max).astype(np.uint16)

    uids = {
        "patient_id": "SYNTH001",
        "study": generate_uid(),
        "series": generate_uid(),
        "frame": generate_uid(),
    }
    n_slices = image.shape[2]
    names = np.random.default_rng(n_slices).permutation(n_slices)
    sop_to_index: dict[str, int] = {}
    for k in range(n_slices):
        ds = _slice_dataset(
            stored[:, :, k].T,  # DICOM pixels are (rows, columns)
            origin + k * lps[:, 2],
            np.concatenate([row_direction, column_direction]),
            (float(spacing[1]), float(spacing[0])),  # (between rows, between columns)
            slice_thickness,
            k,
            modality,
            uids,
        )
        ds.save_as(series_dir / f"IM{names[k]:05d}", enforce_file_format=True)
        sop_to_index[ds.SOPInstanceUID] = k

    with contextlib.redirect_stdout(io.StringIO()):  # rt-utils prints progress
        rtstruct = RTStructBuilder.create_new(dicom_series_path=str(series_dir))
        # rt-utils masks are (rows, columns, slices) in its own slice order: map by SOP UID.
        order = [sop_to_index[ds.SOPInstanceUID] for ds in rtstruct.series_data]
        label_array = labels.array[:, :, order].transpose(1, 0, 2)
        for value, name in roi_names.items():
            rtstruct.add_roi(mask=label_array == value, name=name)
        for name, mask in (extra_rois or {}).items():
            if mask.shape != image.shape:
                raise ValueError(f"mask for {name!r} is {mask.shape}, not {image.shape}")
            rtstruct.add_roi(mask=mask[:, :, order].transpose(1, 0, 2).astype(bool), name=name)
        rtstruct.save(str(folder / "rtstruct.dcm"))
