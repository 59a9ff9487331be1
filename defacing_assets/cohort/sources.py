"""Finding subjects in a data folder and reading them, whatever the layout.

Accepted layouts under one root (mixed freely):

- ``<root>/<subject>/image.nii.gz`` + ``label.nii.gz`` (a 0..8 label map), the
  layout the synthetic cohort writes;
- ``<root>/<subject>/image.nii.gz`` + ``mask_<ROI>.nii.gz`` per structure, the
  layout of the study authors' scripts (ROI names matched by the label table);
- ``<root>/<id>_ct.nii.gz``: HECKTOR-style CT without OAR labels;
- ``<root>/<subject>/`` holding a DICOM series and its RTSTRUCT (extra ``dicom``).

Optional ``subject.json`` (``{"modality": "CT"}``) and ``landmarks.json``
(face landmarks in world mm: ``eye_left``, ``eye_right``, ``nose_tip`` and
``mouth``, each ``[x, y, z]``) beside a subject's image are read and checked too.

One patient must be one subject: a symlinked or copied subject folder would
otherwise become a second subject and could sit in the training and the test
fold at once. :func:`duplicate_problems` finds them by resolved path and by
image content (voxels and affine), and ``validate``, the subject sensor and
``raw_scans`` refuse the second one, naming both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from defacing_assets.cohort.labels import LABEL_NAMES, OAR_LABELS, label_for_roi
from defacing_assets.cohort.scan import Scan
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.io import load_volume
from defacing_assets.imaging.validation import image_problems, label_problems, require
from defacing_assets.imaging.volume import Volume

SUBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
_HECKTOR_SUFFIX = "_ct.nii.gz"
_IMAGE_NAMES = ("image.nii.gz", "image.nii")
_LABEL_NAMES = ("label.nii.gz", "label.nii")
FACE_LANDMARKS = ("eye_left", "eye_right", "nose_tip", "mouth")
"""The landmarks QC judges the eyes, nose and mouth at (see ``qc.landmarks``)."""


@dataclass(frozen=True)
class SubjectSource:
    """Where one subject's files are; reading them is :func:`read_scan`."""

    subject_id: str
    format: str
    """``nifti`` (label map), ``nifti-masks`` (mask per ROI), ``hecktor`` or ``dicom``."""
    path: Path
    """The subject folder, or the image file for HECKTOR."""
    files: tuple[Path, ...] = field(default=())


def subject_id_problem(subject_id: str) -> str | None:
    """Why an id cannot become a partition key and a folder name, or None."""
    if not subject_id:
        return "subject id is empty"
    if subject_id in {".", ".."} or ".." in subject_id:
        return f"subject id {subject_id!r} contains '..'"
    if not SUBJECT_ID_PATTERN.match(subject_id):
        return f"subject id {subject_id!r} has characters outside [A-Za-z0-9._-]"
    return None


def _is_dicom_folder(folder: Path) -> bool:
    for path in folder.rglob("*"):
        if path.is_file():
            if path.suffix.lower() == ".dcm":
                return True
            with path.open("rb") as handle:
                handle.seek(128)
                if handle.read(4) == b"DICM":
                    return True
    return False


def discover_subjects(root: str | Path) -> tuple[list[SubjectSource], list[str]]:
    """Subjects found under ``root`` and a note for every entry that is not one.

    Ids are not validated here (see :func:`subject_id_problem`), so a caller
    can report unsafe ids instead of silently skipping them.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a data folder" if root.exists() else "data folder does not exist"
        raise FileNotFoundError(f"{root}: {what}")
    sources, skipped = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.name.endswith(_HECKTOR_SUFFIX):
                subject_id = entry.name[: -len(_HECKTOR_SUFFIX)]
                sources.append(SubjectSource(subject_id, "hecktor", entry, (entry,)))
            else:
                skipped.append(f"{entry}: not a subject folder or <id>_ct.nii.gz file")
            continue
        image = next((entry / n for n in _IMAGE_NAMES if (entry / n).exists()), None)
        if image is not None:
            label = next((entry / n for n in _LABEL_NAMES if (entry / n).exists()), None)
            if label is not None:
                sources.append(SubjectSource(entry.name, "nifti", entry, (image, label)))
            else:
                masks = tuple(sorted(entry.glob("mask_*.nii*")))
                sources.append(SubjectSource(entry.name, "nifti-masks", entry, (image, *masks)))
        elif _is_dicom_folder(entry):
            sources.append(SubjectSource(entry.name, "dicom", entry))
        else:
            skipped.append(f"{entry}: no image.nii.gz and no DICOM files")
    return sources, skipped


def _sidecar(folder: Path, name: str) -> dict | None:
    path = folder / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidScanError(str(path), f"not valid JSON ({error})") from None
    except OSError as error:
        raise InvalidScanError(str(path), f"cannot be read ({error.strerror or error})") from None
    if not isinstance(data, dict):
        raise InvalidScanError(str(path), f"must be a JSON object, got {type(data).__name__}")
    return data


def subject_modality(folder: Path) -> str:
    """The modality ``subject.json`` beside a subject's image gives (default MR)."""
    modality = (_sidecar(folder, "subject.json") or {}).get("modality", "MR")
    if modality not in ("MR", "CT"):
        raise InvalidScanError(
            str(folder / "subject.json"), f"modality must be 'MR' or 'CT', got {modality!r}"
        )
    return modality


def read_landmarks(folder: Path) -> dict[str, list[float]] | None:
    """``landmarks.json`` beside a subject's image, checked, or None when there is none."""
    landmarks = _sidecar(folder, "landmarks.json")
    if landmarks is None:
        return None
    path = str(folder / "landmarks.json")
    missing = [name for name in FACE_LANDMARKS if name not in landmarks]
    if missing:
        raise InvalidScanError(
            path, f"missing landmark(s) {', '.join(missing)}; needs {', '.join(FACE_LANDMARKS)}"
        )
    for name, point in landmarks.items():
        if not (
            isinstance(point, list)
            and len(point) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            and np.all(np.isfinite(point))
        ):
            raise InvalidScanError(
                path, f"landmark {name!r} must be [x, y, z] in world mm, got {point!r}"
            )
    return landmarks


def _labels_from_masks(
    masks: tuple[Path, ...], image: Volume, roi_table: Mapping[str, int] | None
) -> tuple[Volume, list[str]]:
    labels = np.zeros(image.shape, dtype=np.uint8)
    for mask_path in masks:
        roi = re.sub(r"\.nii(\.gz)?$", "", mask_path.name)[len("mask_") :]
        label = label_for_roi(roi, roi_table)
        if label is None:
            continue
        mask = load_volume(mask_path)
        require(
            label_problems(mask.with_array((mask.array > 0).astype(np.uint8)), image),
            str(mask_path),
        )
        labels[(mask.array > 0) & (labels == 0)] = label
    present = set(np.unique(labels)) - {0}
    absent = [LABEL_NAMES[value] for value in sorted(OAR_LABELS.values()) if value not in present]
    return Volume(labels, image.affine), absent


def read_scan(source: SubjectSource, roi_table: Mapping[str, int] | None = None) -> Scan:
    """Read and validate one subject; raises :class:`InvalidScanError` naming the file."""
    if source.format == "dicom":
        from defacing_assets.cohort.dicom import read_dicom_subject

        scan = read_dicom_subject(source.path, source.subject_id, roi_table)
        require(image_problems(scan.image), str(source.path))
        return scan
    image_path = source.files[0]
    image = load_volume(image_path)
    require(image_problems(image), str(image_path))
    image = Volume(np.asarray(image.array), image.affine)
    if source.format == "hecktor":
        return Scan(
            source.subject_id,
            image,
            None,
            "CT",
            None,
            list(OAR_LABELS),
            {"format": "hecktor", "image": str(image_path)},
        )

    labels, absent = None, []
    if source.format == "nifti":
        label_path = source.files[1]
        labels = load_volume(label_path)
        require(label_problems(labels, image), str(label_path))
        labels = labels.with_array(np.asarray(labels.array).astype(np.uint8))
        present = set(np.unique(labels.array)) - {0}
        absent = [LABEL_NAMES[v] for v in sorted(OAR_LABELS.values()) if v not in present]
    else:
        labels, absent = _labels_from_masks(source.files[1:], image, roi_table)

    modality = subject_modality(source.path)
    landmarks = read_landmarks(source.path)
    return Scan(
        source.subject_id,
        image,
        labels,
        modality,
        landmarks,
        absent,
        {"format": source.format, "files": [str(p) for p in source.files]},
    )


def id_problems(sources: list[SubjectSource]) -> dict[str, str]:
    """Subject ids that cannot become partitions: unsafe characters or case-insensitive clashes."""
    problems = {}
    by_folded: dict[str, list[str]] = {}
    for source in sources:
        problem = subject_id_problem(source.subject_id)
        if problem:
            problems[source.subject_id] = problem
        by_folded.setdefault(source.subject_id.lower(), []).append(source.subject_id)
    for clashing in by_folded.values():
        if len(clashing) > 1:
            for subject_id in clashing:
                others = ", ".join(repr(o) for o in clashing if o != subject_id)
                problems.setdefault(
                    subject_id,
                    f"subject id {subject_id!r} collides case-insensitively with {others}",
                )
    return problems


def _file_problems(path: Path, check, *args) -> tuple[Volume | None, list[str]]:
    try:
        volume = load_volume(path)
    except InvalidScanError as error:
        return None, [str(error)]
    return volume, [f"{path}: {problem}" for problem in check(volume, *args)]


def validate_source(source: SubjectSource, roi_table: Mapping[str, int] | None = None) -> list[str]:
    """Every problem of one subject as ``"<file>: <problem>"`` lines (empty when fine)."""
    if source.format == "dicom":
        try:
            read_scan(source, roi_table)
        except InvalidScanError as error:
            return [str(error)]
        return []
    image, problems = _file_problems(source.files[0], image_problems)
    reference = image if not problems else None
    for path in source.files[1:]:
        if source.format == "nifti":
            _, more = _file_problems(path, label_problems, reference)
        else:
            _, more = _file_problems(
                path,
                lambda mask, ref: label_problems(mask.with_array(mask.array > 0), ref),
                reference,
            )
        problems.extend(more)
    if source.format != "hecktor":
        for check in (subject_modality, read_landmarks):
            try:
                check(source.path)
            except InvalidScanError as error:
                problems.append(str(error))
    return problems


AFFINE_DIGEST_DECIMALS = 4
"""Affines are compared (and hashed) rounded to 1e-4 mm: a re-saved copy may differ
in the last bits of its float32 header fields."""


def _stat_key(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What decides whether a cached digest is still valid: each file's size and mtime."""
    key = []
    for path in paths:
        stat = path.stat()
        key.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(key)


def _rounded_affine(affine: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(affine, dtype=np.float64), AFFINE_DIGEST_DECIMALS) + 0.0


def _image_files(source: SubjectSource) -> list[Path]:
    if source.format == "dicom":
        return sorted(p for p in source.path.rglob("*") if p.is_file())
    return [source.files[0]]


@functools.lru_cache(maxsize=4096)
def _header_signature(key: tuple, path: str) -> str:
    image = nib.load(path)
    shape = image.shape[:3] + tuple(n for n in image.shape[3:] if n != 1)
    return f"{shape}|{_rounded_affine(image.affine).tobytes().hex()}"


@functools.lru_cache(maxsize=4096)
def _content_digest(key: tuple, source: SubjectSource) -> str:
    image = read_scan(source).image if source.format == "dicom" else load_volume(source.files[0])
    digest = hashlib.sha256(f"{image.shape}|".encode())
    for plane in np.moveaxis(np.asarray(image.array), -1, 0):  # float64 one slice at a time
        digest.update(np.ascontiguousarray(plane, dtype=np.float64).tobytes())
    digest.update(_rounded_affine(image.affine).tobytes())
    return digest.hexdigest()


def image_digest(source: SubjectSource) -> str:
    """sha256 of a subject's image voxel values (as float64, so a copy saved in another
    type still matches) and affine.

    Two subjects with the same digest are the same scan, whatever the file's
    compression, type or name. Cached per process while the files' sizes and
    modification times stay the same (the sensor asks on every tick).
    """
    return _content_digest(_stat_key(_image_files(source)), source)


def _signature(source: SubjectSource) -> str:
    """A cheap first filter: NIfTI header shape, dtype and affine (DICOM: the digest)."""
    if source.format == "dicom":
        return image_digest(source)
    return _header_signature(_stat_key(_image_files(source)), str(source.files[0]))


def duplicate_problems(
    sources: list[SubjectSource], keep_first: Iterable[str] = ()
) -> dict[str, str]:
    """Subjects that are another subject again, mapped to a problem naming both.

    Two subjects are one patient when their folders (or image files) resolve
    to the same path (a symlink) or their images have the same voxels and
    affine (a copy, :func:`image_digest`). Of each such group the subject in
    ``keep_first`` (say, one already ingested), else one that is not a
    symlink, else the first by id, is kept; every other one is reported.
    Headers are compared first, so only images that could be equal are read
    whole. Subjects whose files cannot be read are left to validation.
    """
    keep = set(keep_first)
    ordered = sorted(  # kept first: named in keep_first, then real folders before symlinks
        sources,
        key=lambda s: (s.subject_id not in keep, s.path.resolve() != s.path, s.subject_id),
    )
    problems: dict[str, str] = {}
    by_path: dict[Path, SubjectSource] = {}
    for source in ordered:
        paths = {source.path.resolve(), *(p.resolve() for p in _image_files(source)[:1])}
        first = next((by_path[p] for p in paths if p in by_path), None)
        if first is not None:
            shared = next(p for p in paths if p in by_path)
            problems[source.subject_id] = (
                f"subject {source.subject_id!r} is subject {first.subject_id!r} again: "
                f"{source.path} and {first.path} are the same files ({shared}); "
                "one patient must be one subject"
            )
            continue
        for path in paths:
            by_path[path] = source
    by_signature: dict[str, list[SubjectSource]] = {}
    for source in ordered:
        if source.subject_id in problems:
            continue
        try:
            by_signature.setdefault(_signature(source), []).append(source)
        except Exception:  # unreadable: validation reports it, by file
            continue
    for group in by_signature.values():
        if len(group) < 2:
            continue
        by_digest: dict[str, SubjectSource] = {}
        for source in group:
            try:
                digest = image_digest(source)
            except Exception:  # unreadable: validation reports it, by file
                continue
            first = by_digest.setdefault(digest, source)
            if first is not source:
                problems[source.subject_id] = (
                    f"subject {source.subject_id!r} is subject {first.subject_id!r} again: "
                    f"{_image_files(source)[0]} has the same voxels and affine as "
                    f"{_image_files(first)[0]}; one patient must be one subject"
                )
    return problems
