"""The command line as a user meets it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defacing_assets.cli import main
from defacing_assets.imaging import Volume
from defacing_assets_tests.builders import (
    AFFINE,
    SHAPE,
    tiny_image,
    tiny_labels,
    write_bad_subjects,
    write_good_subject,
    write_nifti,
)
from defacing_assets_tests.cohort.dicom_fixtures import write_dicom_case


def test_validate_reports_every_problem_by_file_and_lists_good_subjects(tmp_path, capsys):
    expected = write_bad_subjects(tmp_path)
    write_good_subject(tmp_path, "good_1")
    write_good_subject(tmp_path, "good_2", seed=1)
    write_good_subject(tmp_path, "bad|id")
    dicom = tmp_path / "dicom_no_rtstruct"
    write_dicom_case(
        dicom, Volume(tiny_image(), AFFINE), Volume(tiny_labels(), AFFINE), {1: "Glnd_Submand_L"}
    )
    (dicom / "rtstruct.dcm").unlink()

    assert main(["validate", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    assert "ok   good_1 (nifti)" in output and "ok   good_2 (nifti)" in output
    blocks = output.split("FAIL ")[1:]
    reported = {block.split("\n")[0]: block for block in blocks}
    for subject_id, text in expected.items():
        assert text in reported[subject_id]
        assert str(tmp_path / subject_id) in reported[subject_id]
    assert "no RTSTRUCT" in reported["dicom_no_rtstruct"]
    assert "outside [A-Za-z0-9._-]" in reported["bad|id"]
    assert f"2 of {len(expected) + 4} subjects ok" in output


def test_validate_passes_a_clean_folder(tmp_path, capsys):
    write_good_subject(tmp_path, "good_1")
    assert main(["validate", str(tmp_path)]) == 0


def test_validate_refuses_a_folder_it_cannot_read_and_explains_an_empty_one(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    cases = {"missing": "data folder does not exist", "notes.txt": "is a file, not a data folder"}
    for given, problem in cases.items():
        assert main(["validate", str(tmp_path / given)]) == 2
        assert capsys.readouterr().err == f"error: {tmp_path / given}: {problem}\n"
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 1
    assert f"no subjects in {tmp_path / 'empty'}: expected" in capsys.readouterr().out


def test_synth_writes_a_cohort(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                str(tmp_path),
                "--subjects",
                "2",
                "--seed",
                "1",
                "--profile",
                "ci",
                "--modality",
                "CT",
                "--prefix",
                "CT",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT001", "CT002"]
    assert main(["validate", str(tmp_path)]) == 0


def test_demo_materializes_raw_scans_and_reuses_them(tmp_path):
    study = tmp_path / "study"
    command = [
        sys.executable,
        "-m",
        "defacing_assets.cli",
        "demo",
        "--study",
        str(study),
        "--profile",
        "ci",
        "--subjects",
        "1",
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER", "DEFACING"))}
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert first.returncode == 0, first.stderr[-3000:]
    assert re.search(r"raw_scans 1/1 SYN001 ok", first.stdout), "partition runs reported"
    assert "Table 1: OARs completely removed" in first.stdout
    # pydeface may fail QC here: its cut plane can leave an eye's surface at its own depth.
    assert "1 usable subjects; compared methods: hnc_safe, original" in first.stdout
    stored = sorted(p.name for p in (study / "store" / "raw_scans").iterdir())
    assert stored == ["subject=SYN001"]
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert second.returncode == 0
    assert "raw_scans 1/" not in second.stdout
    rows = [line.split() for line in second.stdout.splitlines() if line.strip().startswith("SYN")]
    assert [row[0] for row in rows] == ["SYN001"]
    assert all(row[-1] == "8" for row in rows), "every OAR present in every subject"


def test_defacers_lists_every_method_with_truthful_availability(capsys):
    assert main(["defacers"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in (
        "original",
        "pydeface",
        "fsl_deface",
        "mri_deface",
        "afni_refacer",
        "mask_face",
        "defacer",
    ):
        assert name in lines
    assert "  available" in lines["pydeface"]
    assert "unavailable: fsl_deface" in lines["fsl_deface"]


def test_bad_study_defacers_yaml_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "defacers.yaml").write_text("defacers:\n  mine:\n    comand: x {input}\n")
    assert main(["defacers", "--study", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "defacers.yaml" in error and "comand" in error and "command" in error


def test_deface_removes_the_face_of_a_synthetic_subject(tmp_path, ci_cohort, capsys):
    from defacing_assets.imaging import load_volume

    out, kept = tmp_path / "defaced.nii.gz", tmp_path / "kept.nii.gz"
    source = ci_cohort / "SYN001"
    assert (
        main(
            [
                "deface",
                "--method",
                "pydeface",
                str(source / "image.nii.gz"),
                str(out),
                "--kept-mask",
                str(kept),
            ]
        )
        == 0
    )
    mask = load_volume(kept)
    landmarks = json.loads((source / "landmarks.json").read_text())
    for point in landmarks.values():
        index = tuple(int(round(v)) for v in mask.world_to_voxel(point)[0])
        assert mask.array[index] == 0
    assert "% of voxels changed" in capsys.readouterr().out


def test_deface_refuses_bad_input_and_unknown_methods(tmp_path, capsys):
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    assert (
        main(
            [
                "deface",
                "--method",
                "pydeface",
                str(tmp_path / "junk.nii.gz"),
                str(tmp_path / "o.nii.gz"),
            ]
        )
        == 2
    )
    assert "junk.nii.gz: not a NIfTI file" in capsys.readouterr().err
    assert main(["deface", "--method", "nope", "a", "b"]) == 2
    assert "unknown defacer 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_deface_hnc_safe_protects_the_labels_it_is_given(tmp_path, ci_cohort, capsys):
    from defacing_assets.imaging import load_volume

    source = ci_cohort / "SYN001"
    image = str(source / "image.nii.gz")
    labels = load_volume(source / "label.nii.gz").array
    for given in (str(source), str(source / "label.nii.gz")):
        out, kept = tmp_path / "defaced.nii.gz", tmp_path / "kept.nii.gz"
        command = ["deface", "--method", "hnc_safe", image, str(out), "--kept-mask", str(kept)]
        assert main([*command, "--labels", given]) == 0
        mask = load_volume(kept).array
        assert mask[labels > 0].all() and (mask == 0).any()
    assert "% of voxels changed" in capsys.readouterr().out


def test_deface_labels_that_do_not_fit_are_refused_by_name(tmp_path, ci_cohort, capsys):
    from defacing_assets.imaging import save_volume

    source = ci_cohort / "SYN001"
    wrong_grid = tmp_path / "labels.nii.gz"
    save_volume(Volume(tiny_labels(), AFFINE), wrong_grid)
    command = ["deface", "--method", "hnc_safe", str(source / "image.nii.gz"), str(tmp_path / "o")]
    assert main([*command, "--labels", str(wrong_grid)]) == 2
    assert f"{wrong_grid}:" in capsys.readouterr().err
    assert main([*command, "--labels", str(tmp_path / "nowhere")]) == 2
    assert "no such label file or subject folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _bad_input_folder(root):
    """What a user may point the commands at by mistake; paths below are relative to it."""
    write_nifti(root / "image.nii.gz", tiny_image())
    write_nifti(root / "nan.nii.gz", np.full(SHAPE, np.nan, dtype=np.float32))
    (root / "folder").mkdir()
    write_nifti(root / "subject" / "image.nii.gz", tiny_image())
    (root / "subject" / "landmarks.json").write_text('{"nose_tip": [1, 2, 3]}')
    (root / "study").mkdir()
    (root / "study" / "defacers.yaml").write_text("defacers:\n  mine:\n    comand: x {input}\n")
    (root / "tools").mkdir()
    (root / "tools" / "defacers.yaml").write_text(
        "defacers:\n  mine:\n    command: no_such_tool_xyz {input} {output}\n"
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("deface folder o.nii.gz", "folder: is a folder, not a NIfTI file"),
        ("deface nan.nii.gz o.nii.gz", "nan.nii.gz: every voxel (10752) is non-finite"),
        ("deface image.nii.gz folder", "folder: is a folder; output must name a file"),
        ("deface image.nii.gz image.nii.gz", "image.nii.gz: output would overwrite an input"),
        (
            "deface image.nii.gz o.nii.gz --kept-mask o.nii.gz",
            "o.nii.gz: given as both output and --kept-mask",
        ),
        ("deface image.nii.gz o.nii.gz --study nowhere", "nowhere: no such study folder"),
        (
            "deface image.nii.gz o.nii.gz --study study",
            "study/defacers.yaml, line 3: defacer 'mine', key 'comand': unknown key "
            "(did you mean 'command'?)",
        ),
        (
            "deface --method mine image.nii.gz o.nii.gz --study tools",
            "mine (tools/defacers.yaml) cannot run here: "
            "executable 'no_such_tool_xyz' not found on PATH",
        ),
        ("defacers --study nowhere", "nowhere: no such study folder"),
        ("qc folder", "folder: is a folder, not a NIfTI file"),
        ("qc nan.nii.gz", "nan.nii.gz: every voxel (10752) is non-finite"),
        (
            "qc image.nii.gz --original subject/image.nii.gz",
            "subject/landmarks.json: missing landmark(s) eye_left, eye_right, mouth",
        ),
        ("qc image.nii.gz --render folder", "folder: is a folder; --render must name a file"),
        ("qc image.nii.gz --render image.nii.gz", "image.nii.gz: --render would overwrite"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(
    tmp_path, monkeypatch, capsys, command, expected
):
    _bad_input_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    name, *args = command.split()
    argv = [name, "--method", "pydeface", *args] if name == "deface" else [name, *args]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {expected}") and error.count("\n") == 1, error
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_qc_json_agrees_with_truth_for_pydeface_and_the_original(tmp_path, ci_cohort, capsys):
    source = ci_cohort / "SYN002"
    defaced = tmp_path / "defaced.nii.gz"
    assert main(["deface", "--method", "pydeface", str(source / "image.nii.gz"), str(defaced)]) == 0
    capsys.readouterr()
    render = tmp_path / "renders.png"
    assert (
        main(
            [
                "qc",
                str(defaced),
                "--original",
                str(source / "image.nii.gz"),
                "--json",
                "--render",
                str(render),
            ]
        )
        == 0
    )
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["face_detected"] is False and verdict["passed"] is True
    assert verdict["eyes_removed"] and verdict["nose_removed"] and verdict["mouth_removed"]
    assert set(verdict["views"]) == {
        "frontal",
        "oblique_left",
        "oblique_right",
        "profile_left",
        "profile_right",
    }
    assert render.read_bytes()[:4] == b"\x89PNG"
    assert main(["qc", str(source / "image.nii.gz"), "--json"]) == 1
    alone = json.loads(capsys.readouterr().out)
    assert alone["face_detected"] is True and alone["eyes_removed"] is None


def test_readme_worked_example_wraps_a_command_line_tool(tmp_path, ci_cohort, monkeypatch):
    """examples/defacers.yaml (the README's worked example) runs here and keeps every OAR."""
    from defacing_assets.cohort.sources import discover_subjects, read_scan
    from defacing_assets.defacers.registry import get_defacer

    examples = Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    defacer = get_defacer("hnc_safe_atlas", examples / "defacers.yaml")
    assert defacer.available() == (True, "")
    scan = read_scan(discover_subjects(ci_cohort)[0][0])
    result = defacer.deface(scan.image, scan.modality)
    assert result.status == "ok", result.reason
    kept = result.kept_mask.array.astype(bool)
    assert 0 < (~kept).sum() < kept.size
    assert kept[scan.labels.array > 0].all(), "the atlas protects every OAR voxel"
    np.testing.assert_array_equal(result.image.array[kept], scan.image.array[kept])


def _write_rgb_and_complex(root: Path) -> dict[str, str]:
    """An RGB24 and a complex64 NIfTI; returns file name -> reason the refusal must give."""
    import nibabel as nib

    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = (tiny_image() % 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(rgb, AFFINE), str(root / "rgb.nii.gz"))
    nib.save(nib.Nifti1Image((tiny_image() + 1j).astype(np.complex64), AFFINE), str(root / "c.nii"))
    return {"rgb.nii.gz": "is an RGB colour image", "c.nii": "is complex-valued (complex64)"}


def test_deface_refuses_rgb_and_complex_images_in_one_line_naming_the_file(tmp_path, capsys):
    for name, reason in _write_rgb_and_complex(tmp_path).items():
        out = tmp_path / "out.nii.gz"
        assert main(["deface", "--method", "original", str(tmp_path / name), str(out)]) == 2
        error = capsys.readouterr().err
        assert error == f"error: {tmp_path / name}: {reason}" + error.split(reason)[1]
        assert error.count("\n") == 1 and "Traceback" not in error
        assert not out.exists()


def test_deface_writes_the_container_its_output_names(tmp_path, capsys):
    import nibabel as nib

    source = write_nifti(tmp_path / "in.nii.gz", tiny_image())
    out, kept = tmp_path / "out.nii", tmp_path / "kept.nii.gz"
    command = ["deface", "--method", "original", str(source), str(out), "--kept-mask", str(kept)]
    assert main(command) == 0
    assert out.read_bytes()[:2] != b"\x1f\x8b" and kept.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(nib.load(str(out)).get_fdata(), tiny_image())
    assert (nib.load(str(kept)).get_fdata() == 1).all()
    capsys.readouterr()
    for bad in ("out.img", "out.gz", "out"):
        assert main(["deface", "--method", "original", str(source), str(tmp_path / bad)]) == 2
        assert "cannot tell which format to write" in capsys.readouterr().err
        assert not (tmp_path / bad).exists()


def test_deface_writes_image_and_kept_mask_together_or_neither(tmp_path, capsys):
    source = write_nifti(tmp_path / "in.nii.gz", tiny_image())
    (tmp_path / "a_file").write_text("not a folder")
    out, kept = tmp_path / "out.nii.gz", tmp_path / "a_file" / "kept.nii.gz"
    command = ["deface", "--method", "original", str(source), str(out), "--kept-mask", str(kept)]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {kept}: cannot write") and "nothing was written" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "in.nii.gz"]
