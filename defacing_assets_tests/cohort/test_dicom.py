"""Round trips through real DICOM files: series and RTSTRUCT written, then read back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from defacing_assets.cohort.dicom import read_dicom_series, read_dicom_subject
from defacing_assets.cohort.labels import OAR_LABELS
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.volume import Volume
from defacing_assets_tests.cohort.dicom_fixtures import write_dicom_case

SHAPE = (48, 40, 20)  # deliberately not square in-plane
ROIS = {
    7: "Parotid_L",
    2: "Glnd_Submand_R",
    3: "LN_Neck_II_L",
    6: "Level III right",  # not a TG-263 spelling: matched by the label rules
}
# Ellipsoids (centre and radii in voxels) per label; Parotid_L reaches i >= 40, which a reader
# that mixes up rows and columns on this non-square grid would clip or misplace.
ELLIPSOIDS = {
    7: ((38.0, 12.0, 6.0), (7.0, 6.0, 3.5)),
    2: ((12.0, 28.0, 13.0), (6.0, 5.0, 3.0)),
    3: ((30.0, 22.0, 8.0), (5.0, 4.0, 3.0)),
    6: ((14.0, 10.0, 4.0), (4.0, 5.0, 2.5)),
}


def _rotation_z(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _affine(direction: np.ndarray, spacing=(1.0, 1.0, 2.5), origin=(-23.5, 41.25, -60.0)):
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _case(affine: np.ndarray, modality: str = "MR") -> tuple[Volume, Volume]:
    i, j, k = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for label, (centre, radii) in ELLIPSOIDS.items():
        inside = (
            sum(((x - c) / r) ** 2 for x, c, r in zip((i, j, k), centre, radii, strict=True)) <= 1
        )
        labels[inside & (labels == 0)] = label
    values = 200 + 3 * i - 2 * j + 5 * k + 100 * (labels > 0)
    if modality == "CT":
        values = values - 1000  # HU, negative values included
    return Volume(values.astype(np.float32), affine), Volume(labels, affine)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.sum(a & b)) / float(np.sum(a) + np.sum(b))


LPS_ORIENTED = np.diag([-1.0, -1.0, 1.0])  # array axes point L, P, S
OBLIQUE = _rotation_z(20.0) @ np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # coronal


@pytest.mark.parametrize(
    ("direction", "modality"),
    [(np.eye(3), "MR"), (LPS_ORIENTED, "CT"), (OBLIQUE, "MR")],
    ids=["ras-mr", "lps-ct", "oblique-coronal-mr"],
)
def test_round_trip_keeps_grid_values_and_labels(tmp_path, direction, modality):
    image, labels = _case(_affine(direction), modality)
    write_dicom_case(tmp_path, image, labels, ROIS, modality=modality)
    (tmp_path / "notes.txt").write_text("not DICOM")

    scan = read_dicom_subject(tmp_path, "subject-001")

    assert scan.subject_id == "subject-001"
    assert scan.modality == modality
    assert scan.image.shape == SHAPE
    np.testing.assert_allclose(scan.image.affine, image.affine, atol=1e-3, rtol=0)
    assert scan.image.array.dtype == np.float32
    np.testing.assert_allclose(scan.image.array, image.array, atol=0.5)
    assert scan.labels is not None
    assert scan.labels.same_grid(scan.image)
    assert scan.labels.array.dtype == np.uint8
    for label in ROIS:
        dice = _dice(scan.labels.array == label, labels.array == label)
        assert dice >= 0.95, f"label {label}: Dice {dice:.3f}"
    assert set(np.unique(scan.labels.array)) == {0, *ROIS}
    written = {name for name, label in OAR_LABELS.items() if label in ROIS}
    assert sorted(scan.absent_structures) == sorted(set(OAR_LABELS) - written)
    assert scan.source["format"] == "dicom"
    assert scan.source["folder"] == str(tmp_path)
    assert Path(scan.source["rtstruct"]) == tmp_path / "rtstruct.dcm"
    assert scan.source["series_uid"]


def test_left_handed_grid_comes_back_flipped_but_in_the_same_place(tmp_path):
    # Slice axis against the slice normal: readers stack slices along the normal instead.
    affine = _affine(np.diag([1.0, 1.0, -1.0]))
    image, labels = _case(affine)
    write_dicom_case(tmp_path, image, labels, ROIS)

    scan = read_dicom_subject(tmp_path, "s")

    expected_image, expected_labels = image.to_canonical(), labels.to_canonical()
    assert scan.image.to_canonical().same_grid(expected_image)
    np.testing.assert_allclose(scan.image.to_canonical().array, expected_image.array, atol=0.5)
    got = scan.labels.to_canonical().array
    for label in ROIS:
        assert _dice(got == label, expected_labels.array == label) >= 0.95


def test_non_oar_and_derived_rois_are_ignored_and_the_first_overlapping_oar_wins(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    parotid_l = labels.array == 7
    shifted = np.zeros(SHAPE, dtype=bool)
    shifted[:-4] = parotid_l[4:]  # Parotid_L moved 4 voxels along i: partly overlapping
    body = np.zeros(SHAPE, dtype=bool)
    body[2:-2, 2:-2, 1:-1] = True
    prv = np.zeros(SHAPE, dtype=bool)  # Parotid_L grown by 2 voxels in-plane: a derived ROI
    for di in range(-2, 3):
        for dj in range(-2, 3):
            prv |= np.roll(parotid_l, (di, dj), axis=(0, 1))
    extra = {"External": body, "PTV_70": parotid_l, "Parotid_L_PRV": prv, "Parotid_R": shifted}
    write_dicom_case(tmp_path, image, labels, ROIS, extra_rois=extra)

    scan = read_dicom_subject(tmp_path, "s")

    got = scan.labels.array
    assert np.array_equal(got == 7, parotid_l)  # listed first: keeps the shared voxels
    assert np.array_equal(got == 8, shifted & ~parotid_l)
    assert np.sum(got > 0) == np.sum(labels.array > 0) + np.sum(shifted & ~parotid_l)  # no body
    assert "Parotid_R" not in scan.absent_structures
    assert scan.source["rois"]["Parotid_L"] == "Parotid_L"  # not the PRV listed after it
    assert scan.source["rois"]["LN_Neck_III_R"] == "Level III right"


def test_roi_table_overrides_names(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, {7: "PG left", 2: "SMG_R"})

    default = read_dicom_subject(tmp_path, "s")
    custom = read_dicom_subject(tmp_path, "s", roi_table={"PG left": 8, "smg_r": 0})

    assert set(np.unique(default.labels.array)) == {0, 2}  # "PG left" is not recognised
    assert "Parotid_L" in default.absent_structures
    assert set(np.unique(custom.labels.array)) == {0, 8}
    assert np.array_equal(custom.labels.array == 8, labels.array == 7)


def test_picks_the_series_the_rtstruct_references(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path / "a", image, labels, ROIS)
    write_dicom_case(tmp_path / "b", image.with_array(image.array * 0 + 7), labels, ROIS)
    folder = tmp_path / "mixed"
    shutil.copytree(tmp_path / "a" / "series", folder / "series_a")
    shutil.copytree(tmp_path / "b" / "series", folder / "series_b")
    shutil.copy(tmp_path / "b" / "rtstruct.dcm", folder / "RS.dcm")

    scan = read_dicom_subject(folder, "s")

    assert np.all(scan.image.array == 7)


def test_rtstruct_of_another_series_is_refused(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path / "a", image, labels, ROIS)
    write_dicom_case(tmp_path / "b", image, labels, ROIS)
    shutil.copy(tmp_path / "b" / "rtstruct.dcm", tmp_path / "a" / "rtstruct.dcm")

    with pytest.raises(InvalidScanError, match=r"references series .* not in the folder"):
        read_dicom_subject(tmp_path / "a", "s")


def test_missing_rtstruct_is_refused(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    (tmp_path / "rtstruct.dcm").unlink()

    with pytest.raises(InvalidScanError, match="no RTSTRUCT file found") as caught:
        read_dicom_subject(tmp_path, "s")
    assert caught.value.path == str(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_truncated_rtstruct_is_refused(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    rtstruct = tmp_path / "rtstruct.dcm"
    rtstruct.write_bytes(rtstruct.read_bytes()[: rtstruct.stat().st_size // 2])

    with pytest.raises(InvalidScanError, match="truncated") as caught:
        read_dicom_subject(tmp_path, "s")
    assert caught.value.path == str(rtstruct)


def test_missing_slice_is_refused(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    slices = sorted((tmp_path / "series").iterdir())
    slices[len(slices) // 2].unlink()  # file names are shuffled: some inner slice goes

    with pytest.raises(InvalidScanError, match=r"uneven slice gaps|several slices"):
        read_dicom_subject(tmp_path, "s")


@pytest.mark.parametrize("content", [None, "notes.txt", "sub/readme.md"])
def test_folder_without_dicom_files_is_refused(tmp_path, content):
    if content is not None:
        (tmp_path / content).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / content).write_text("no DICOM here")

    with pytest.raises(InvalidScanError, match="no DICOM files found") as caught:
        read_dicom_subject(tmp_path, "s")
    assert caught.value.path == str(tmp_path)
    if content is not None:
        assert f"1 file(s) here are not DICOM: {content}" in caught.value.problem


def test_rtstruct_without_image_series_is_refused(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    shutil.rmtree(tmp_path / "series")

    with pytest.raises(InvalidScanError, match="no image series found"):
        read_dicom_subject(tmp_path, "s")


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(InvalidScanError, match="is not a folder"):
        read_dicom_subject(tmp_path / "nowhere", "s")


def test_series_alone_reads_without_an_rtstruct(tmp_path):
    image, labels = _case(_affine(_rotation_z(20)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    (tmp_path / "rtstruct.dcm").unlink()

    volume = read_dicom_series(tmp_path)

    assert volume.same_grid(image)
    np.testing.assert_array_equal(volume.array, image.array)


def test_series_alone_refuses_uneven_gaps_unless_told_how_uneven(tmp_path):
    image, labels = _case(_affine(np.eye(3)))
    write_dicom_case(tmp_path, image, labels, ROIS)
    (tmp_path / "rtstruct.dcm").unlink()
    slices = sorted((tmp_path / "series").iterdir())
    slices[len(slices) // 2].unlink()  # one gap of 5 mm among 2.5 mm ones

    with pytest.raises(InvalidScanError, match="uneven slice gaps"):
        read_dicom_series(tmp_path)
    assert read_dicom_series(tmp_path, spacing_tolerance=1.5).shape == (48, 40, 19)


def test_series_alone_refuses_a_folder_without_one(tmp_path):
    (tmp_path / "notes.txt").write_text("no images")

    with pytest.raises(InvalidScanError, match="holds 0 image series"):
        read_dicom_series(tmp_path)
