import json

import numpy as np
import pytest

from defacing_assets.cohort.sources import (
    FACE_LANDMARKS,
    discover_subjects,
    id_problems,
    read_scan,
    subject_id_problem,
    validate_source,
)
from defacing_assets.imaging import InvalidScanError
from defacing_assets_tests.builders import (
    tiny_image,
    tiny_labels,
    write_bad_subjects,
    write_good_subject,
    write_nifti,
)


def test_authors_layout_with_one_mask_per_roi(tmp_path):
    folder = tmp_path / "HNC_01"
    write_nifti(folder / "image.nii.gz", tiny_image())
    labels = tiny_labels()
    write_nifti(folder / "mask_Glnd_Submand_L.nii.gz", (labels == 1).astype(np.uint8))
    write_nifti(folder / "mask_Submandibular Gland Rt.nii.gz", (labels == 2).astype(np.uint8) * 255)
    write_nifti(folder / "mask_Parotid_L.nii.gz", (labels == 7).astype(np.uint8))
    write_nifti(folder / "mask_Brainstem.nii.gz", np.zeros_like(labels))
    [source], skipped = discover_subjects(tmp_path)
    assert (source.subject_id, source.format, skipped) == ("HNC_01", "nifti-masks", [])
    scan = read_scan(source)
    np.testing.assert_array_equal(scan.labels.array, labels)
    assert scan.absent_structures == [
        "LN_Neck_II_L",
        "LN_Neck_II_R",
        "LN_Neck_III_L",
        "LN_Neck_III_R",
        "Parotid_R",
    ]


LANDMARKS = {name: [1.0, 2.0, 3.0] for name in FACE_LANDMARKS}


def test_label_map_layout_and_sidecars(tmp_path):
    folder = write_good_subject(tmp_path, "S1")
    (folder / "subject.json").write_text('{"modality": "CT"}')
    (folder / "landmarks.json").write_text(json.dumps(LANDMARKS))
    [source], _ = discover_subjects(tmp_path)
    scan = read_scan(source)
    assert scan.modality == "CT"
    assert scan.landmarks == LANDMARKS
    assert scan.voxels_per_oar()["Parotid_L"] == int((tiny_labels() == 7).sum())


def test_hecktor_ct_files_are_unlabelled_subjects(tmp_path):
    write_nifti(tmp_path / "CHUP-001_ct.nii.gz", (tiny_image() * 10 - 1000).astype(np.int16))
    (tmp_path / "notes.txt").write_text("hello")
    [source], skipped = discover_subjects(tmp_path)
    scan = read_scan(source)
    assert (scan.subject_id, scan.modality, scan.labels) == ("CHUP-001", "CT", None)
    assert len(scan.absent_structures) == 8
    assert "notes.txt" in skipped[0]


def test_every_bad_input_is_reported_by_file_and_others_unaffected(tmp_path):
    expected = write_bad_subjects(tmp_path)
    write_good_subject(tmp_path, "good_1")
    write_good_subject(tmp_path, "good_2", seed=1)
    sources, _ = discover_subjects(tmp_path)
    problems = {source.subject_id: validate_source(source) for source in sources}
    assert problems["good_1"] == problems["good_2"] == []
    for subject_id, text in expected.items():
        assert len(problems[subject_id]) >= 1, subject_id
        joined = " ".join(problems[subject_id])
        assert text in joined, (subject_id, joined)
        assert str(tmp_path / subject_id) in joined
        with pytest.raises(InvalidScanError):
            read_scan(next(s for s in sources if s.subject_id == subject_id))


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("subject.json", "[1, 2]", "must be a JSON object, got list"),
        ("subject.json", '{"modality": "PET"}', "modality must be 'MR' or 'CT', got 'PET'"),
        ("landmarks.json", "{", "not valid JSON"),
        ("landmarks.json", '{"nose_tip": [1, 2, 3]}', "missing landmark(s) eye_left, eye_right"),
        (
            "landmarks.json",
            json.dumps({**LANDMARKS, "mouth": [1, 2]}),
            "landmark 'mouth' must be [x, y, z] in world mm, got [1, 2]",
        ),
        ("landmarks.json", json.dumps({**LANDMARKS, "mouth": "x"}), "landmark 'mouth'"),
    ],
)
def test_bad_sidecars_are_reported_by_file_before_any_step_reads_them(
    tmp_path, name, text, expected
):
    folder = write_good_subject(tmp_path, "S1")
    (folder / name).write_text(text)
    [source], _ = discover_subjects(tmp_path)
    [problem] = validate_source(source)
    assert problem.startswith(f"{folder / name}: ") and expected in problem, problem
    with pytest.raises(InvalidScanError) as raised:
        read_scan(source)
    assert str(raised.value) == problem


def test_a_file_given_as_data_folder_is_named(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(FileNotFoundError, match="data.csv: is a file, not a data folder"):
        discover_subjects(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match="absent: data folder does not exist"):
        discover_subjects(tmp_path / "absent")


@pytest.mark.parametrize("bad", ["a|b", "a/b", "..", "x..y", "sp ace", "", "ümlaut"])
def test_unsafe_subject_ids(bad):
    assert subject_id_problem(bad) is not None


def test_safe_ids_and_case_insensitive_collisions(tmp_path):
    assert subject_id_problem("HNC-01.a_b") is None
    write_good_subject(tmp_path, "Case1")
    write_good_subject(tmp_path, "CASE1")
    write_good_subject(tmp_path, "other")
    sources, _ = discover_subjects(tmp_path)
    problems = id_problems(sources)
    assert set(problems) == {"Case1", "CASE1"}
    assert "collides case-insensitively" in problems["Case1"]
