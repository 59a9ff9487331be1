"""One patient is one subject, and only grey-valued scans become subjects (issue 22, items 3, 6).

A symlinked or copied subject folder used to be accepted as a second subject,
so one patient could sit in the training and the test fold; RGB and complex
images passed ``validate`` and the sensor and failed later naming no file.
Both are refused in the source listing that ``validate``, the subject sensor
(``new_valid_subjects``, also used by ``make demo``) and ``raw_scans`` use.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from defacing_assets.assets.ingest import partition_duplicate
from defacing_assets.cli import main
from defacing_assets.cohort.sources import (
    discover_subjects,
    duplicate_problems,
    image_digest,
    read_scan,
    validate_source,
)
from defacing_assets.evaluation.cohort import assign_folds
from defacing_assets.imaging import InvalidScanError
from defacing_assets.resources import StudyConfig
from defacing_assets.sensors import new_valid_subjects
from defacing_assets_tests.builders import (
    AFFINE,
    SHAPE,
    tiny_image,
    tiny_labels,
    write_good_subject,
    write_nifti,
)


class Log:
    """Collects what the sensor logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    warning = debug = info


def write_copied_and_linked(root):
    """P01 and P02 are patients; COPY is P01 re-saved (float64, other compression) and LINK
    a symlink to P01's folder."""
    write_good_subject(root, "P01", seed=0)
    write_good_subject(root, "P02", seed=1)
    image = nib.load(str(root / "P01" / "image.nii.gz"))
    copy = root / "COPY"
    copy.mkdir()
    nib.save(
        nib.Nifti1Image(np.asanyarray(image.dataobj).astype(np.float64), image.affine),
        str(copy / "image.nii"),
    )
    shutil.copy(root / "P01" / "label.nii.gz", copy / "label.nii.gz")
    (root / "LINK").symlink_to(root / "P01", target_is_directory=True)


def test_copies_and_symlinks_are_found_by_content_and_path_naming_both(tmp_path):
    write_copied_and_linked(tmp_path)
    sources, _ = discover_subjects(tmp_path)
    problems = duplicate_problems(sources)
    assert set(problems) == {"LINK", "P01"}, problems  # real folders first, then by id
    assert "'P01' is subject 'COPY' again" in problems["P01"]
    assert "same voxels and affine" in problems["P01"]
    assert "'LINK' is subject 'P01' again" in problems["LINK"]
    assert "same files" in problems["LINK"]
    kept_existing = duplicate_problems(sources, keep_first={"P01"})
    assert set(kept_existing) == {"COPY", "LINK"}
    assert "same files" in kept_existing["LINK"] and "'P01'" in kept_existing["LINK"]
    assert "'COPY' is subject 'P01' again" in kept_existing["COPY"]


def test_same_voxels_on_another_grid_are_not_a_duplicate(tmp_path):
    write_good_subject(tmp_path, "A")
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    write_nifti(tmp_path / "B" / "image.nii.gz", tiny_image(), shifted)
    write_nifti(tmp_path / "B" / "label.nii.gz", tiny_labels(), shifted)
    assert duplicate_problems(discover_subjects(tmp_path)[0]) == {}


def test_the_sensor_refuses_the_second_copy_so_no_patient_reaches_two_folds(tmp_path):
    """Refusal happens before the split: only subjects the sensor adds become partitions,
    and ``study_cohort`` splits partitions, so a refused copy never gets a fold."""
    write_copied_and_linked(tmp_path)
    study = StudyConfig(data_root=str(tmp_path))
    log = Log()
    first_tick = new_valid_subjects(study, set(), log)
    assert first_tick == ["COPY", "P02"]
    refused = [line for line in log.lines if line.startswith("refused")]
    assert len(refused) == 2
    assert any("'LINK'" in line and "again" in line for line in refused)
    assert any("'P01' is subject 'COPY' again" in line for line in refused)

    log = Log()  # P01 already a partition (added before this check existed): it is kept
    assert new_valid_subjects(study, {"P01", "P02"}, log) == []
    assert any("'COPY' is subject 'P01' again" in line for line in log.lines)

    folds = assign_folds(first_tick, n_folds=2, seed=0)
    sources = {s.subject_id: s for s in discover_subjects(tmp_path)[0]}
    patients = {image_digest(source) for source in sources.values()}
    assert len(patients) == 2  # P01, COPY and LINK are one patient
    assert len({image_digest(sources[subject]) for subject in folds}) == len(folds) == 2


def test_raw_scans_refuses_a_partition_that_copies_an_earlier_one(tmp_path):
    write_copied_and_linked(tmp_path)
    sources, _ = discover_subjects(tmp_path)
    assert partition_duplicate("P01", sources, {"P01", "P02"}) is None
    problem = partition_duplicate("P01", sources, {"COPY", "P01", "P02"})
    assert "'P01' is subject 'COPY' again" in problem
    assert partition_duplicate("COPY", sources, {"COPY", "P01", "P02"}) is None


def test_validate_reports_the_copy_with_both_names(tmp_path, capsys):
    write_copied_and_linked(tmp_path)
    assert main(["validate", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    assert "ok   COPY" in output and "ok   P02" in output
    assert "FAIL P01" in output and "'P01' is subject 'COPY' again" in output
    assert "FAIL LINK" in output
    assert "2 of 4 subjects ok" in output


RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def write_non_grey_subjects(root) -> dict[str, str]:
    """One subject per kind of non-grey image; returns subject -> reason expected."""
    rgb = np.zeros(SHAPE, dtype=RGB)
    rgb["G"] = (tiny_image() % 200).astype(np.uint8)
    cases = {
        "rgb": (rgb, None, "RGB colour image"),
        "complex": ((tiny_image() + 2j).astype(np.complex64), None, "complex-valued"),
        "vector": (np.stack([tiny_image()] * 3, -1)[..., None, :], "vector", "vector-valued"),
    }
    for name, (array, intent, _) in cases.items():
        folder = root / name
        folder.mkdir()
        image = nib.Nifti1Image(array, AFFINE)
        if intent:
            image.header.set_intent(intent)
        nib.save(image, str(folder / "image.nii.gz"))
        write_nifti(folder / "label.nii.gz", tiny_labels())
    return {name: reason for name, (_, _, reason) in cases.items()}


def test_non_grey_subjects_are_refused_by_file_in_every_path(tmp_path, capsys):
    expected = write_non_grey_subjects(tmp_path)
    write_good_subject(tmp_path, "good")
    sources = {s.subject_id: s for s in discover_subjects(tmp_path)[0]}
    for subject, reason in expected.items():
        image = tmp_path / subject / "image.nii.gz"
        [problem] = validate_source(sources[subject])
        assert problem.startswith(f"{image}: ") and reason in problem
        with pytest.raises(InvalidScanError) as raised:  # raw_scans reads with read_scan
            read_scan(sources[subject])
        assert raised.value.path == str(image) and reason in raised.value.problem

    log = Log()
    assert new_valid_subjects(StudyConfig(data_root=str(tmp_path)), set(), log) == ["good"]
    for subject, reason in expected.items():
        assert any(f"refused {subject}: " in line and reason in line for line in log.lines)

    assert main(["validate", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    for subject, reason in expected.items():
        block = output.split(f"FAIL {subject}\n")[1].split("\n")[0]
        assert str(tmp_path / subject / "image.nii.gz") in block and reason in block
    assert "1 of 4 subjects ok" in output


def test_raw_scans_fails_naming_the_file_for_rgb_and_both_subjects_for_a_copy(tmp_path):
    """The ingest asset itself: an RGB image fails with its file and reason (it used to be a
    TypeError naming no file), a partition copying an earlier one fails naming both."""
    from dagster import DagsterInstance, materialize

    from defacing_assets.assets.ingest import raw_scans
    from defacing_assets.storage import ScanStore

    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    write_non_grey_subjects(data)
    write_copied_and_linked(data)
    resources = {
        "study": StudyConfig(data_root=str(data), profile="ci"),
        "scan_io_manager": ScanStore(base_path=str(store)),
    }
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("subjects", ["rgb", "COPY", "P01"])
        failures = {}
        for subject in ("rgb", "COPY", "P01"):
            result = materialize(
                [raw_scans],
                partition_key=subject,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            events = result.get_step_failure_events()
            failures[subject] = events[0].event_specific_data.error.to_string() if events else None
    assert "InvalidScanError" in failures["rgb"]
    assert f"{data / 'rgb' / 'image.nii.gz'}: is an RGB colour image" in failures["rgb"]
    assert failures["COPY"] is None
    assert "'P01' is subject 'COPY' again" in failures["P01"]
