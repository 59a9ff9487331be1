"""pydeface as the platform runs it: the face goes, and so does the neck below the template."""

import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from defacing_assets.cohort.phantom import template_path
from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.base import DefacingFailed
from defacing_assets.defacers.pydeface import Pydeface, check_transform
from defacing_assets.defacers.registry import get_defacer, registry
from defacing_assets.imaging import load_volume


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(f"S{i}", i, seed=21, profile="ci")[0] for i in range(3)]


@pytest.fixture(scope="module")
def pydeface_results(subjects):
    return [Pydeface().deface(scan.image) for scan in subjects]


def _kept_ratio(scan, result, labels):
    inside = np.isin(scan.labels.array, labels)
    return float(np.mean(result.kept_mask.array[inside] > 0))


def test_defaced_is_input_times_kept_mask(subjects, pydeface_results):
    for scan, result in zip(subjects, pydeface_results, strict=True):
        assert result.status == "ok", result.reason
        expected = scan.image.array * result.kept_mask.array
        np.testing.assert_array_equal(result.image.array, expected)


def test_face_landmarks_removed(subjects, pydeface_results):
    removed = 0
    for scan, result in zip(subjects, pydeface_results, strict=True):
        kept = result.kept_mask.array > 0
        voxels = np.round(scan.image.world_to_voxel(list(scan.landmarks.values()))).astype(int)
        removed += all(not kept[tuple(v)] for v in voxels)
    assert removed >= 2


def test_neck_below_template_is_erased_as_in_the_study(subjects, pydeface_results):
    for scan, result in zip(subjects, pydeface_results, strict=True):
        assert _kept_ratio(scan, result, [5, 6]) < 0.1, "level III nodes erased"
        assert _kept_ratio(scan, result, [1, 2]) < 0.97, "submandibular glands clipped"
        assert _kept_ratio(scan, result, [7, 8]) > 0.9, "parotids kept"


def test_turning_zero_padding_off_keeps_the_neck(subjects):
    result = Pydeface(keep_outside_template=True).deface(subjects[0].image)
    assert _kept_ratio(subjects[0], result, [5, 6]) > 0.9


def test_pydeface_template_loses_its_face():
    template = load_volume(str(template_path()))
    result = Pydeface().deface(template)
    face_mask = load_volume(str(template_path("facemask.nii.gz"))).array < 0.5
    removed = result.kept_mask.array == 0
    overlap = np.count_nonzero(removed & face_mask) / np.count_nonzero(face_mask)
    assert overlap > 0.9


def test_divergent_registration_is_a_failure_not_a_crash():
    exploded = sitk.AffineTransform(3)
    exploded.SetMatrix([5, 0, 0, 0, 5, 0, 0, 0, 5])
    with pytest.raises(DefacingFailed, match="registration diverged"):
        check_transform(sitk.CompositeTransform([exploded]))


def test_registry_lists_builtins_and_identity_keeps_everything(subjects):
    assert {"original", "pydeface"} <= set(registry())
    result = get_defacer("original").deface(subjects[0].image)
    assert result.status == "ok" and result.changed_fraction == 0.0
    np.testing.assert_array_equal(result.image.array, subjects[0].image.array)
    with pytest.raises(KeyError, match="unknown defacer 'nope'"):
        get_defacer("nope")


STAND_IN_PYDEFACE = """#!{python}
import argparse
import nibabel as nib
import numpy as np
parser = argparse.ArgumentParser()
parser.add_argument("infile")
parser.add_argument("--outfile", required=True)
parser.add_argument("--force", action="store_true")
args = parser.parse_args()
image = nib.load(args.infile)
data = np.asanyarray(image.dataobj).copy()
data[:, -5:, :] = 0
nib.save(nib.Nifti1Image(data, image.affine), args.outfile)
"""


def test_fsl_engine_runs_the_real_command_when_fsl_is_installed(tmp_path, monkeypatch, subjects):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pydeface").write_text(STAND_IN_PYDEFACE.format(python=sys.executable))
    (bin_dir / "flirt").write_text("#!/bin/sh\nexit 0\n")
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FSLDIR", str(tmp_path))
    image = subjects[0].image
    result = Pydeface().deface(image)
    assert result.status == "ok", result.reason
    assert result.command.startswith("pydeface --outfile")
    kept = result.kept_mask.array.astype(bool)
    np.testing.assert_array_equal(kept[:, -5:, :], image.array[:, -5:, :] == 0)
    assert kept[:, :-5, :].all()
    np.testing.assert_array_equal(result.image.array, image.array * result.kept_mask.array)
    assert Pydeface(engine="simpleitk").deface(image).command.startswith("SimpleITK")
