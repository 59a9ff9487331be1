"""Images that are not one real number per voxel are refused by name; writes say what they are.

Issue 22, items 3 and 8: an RGB or complex NIfTI passed validation and failed
later with a ``TypeError`` naming no file; ``deface ... OUT.nii`` wrote gzip
bytes under a plain ``.nii`` name; an image was left behind when its kept
mask could not be written.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest

from defacing_assets.imaging import InvalidScanError, Volume, image_problems, label_problems
from defacing_assets.imaging.io import (
    load_volume,
    nifti_suffix_problem,
    save_volume,
    save_volumes,
    sweep_stale_staging,
)
from defacing_assets_tests.builders import AFFINE, SHAPE, tiny_image, tiny_labels

RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])


def rgb_array(dtype: np.dtype = RGB) -> np.ndarray:
    array = np.zeros(SHAPE, dtype=dtype)
    array["R"] = (tiny_image() % 255).astype(np.uint8)
    return array


def write(path, array: np.ndarray, intent: str | None = None):
    image = nib.Nifti1Image(array, AFFINE)
    if intent:
        image.header.set_intent(intent)
    nib.save(image, str(path))
    return path


CASES = {
    "rgb24": (lambda: rgb_array(), None, "RGB colour image"),
    "rgba32": (lambda: rgb_array(RGBA), None, "RGBA colour image"),
    "complex64": (lambda: (tiny_image() + 1j).astype(np.complex64), None, "complex-valued"),
    "complex128": (lambda: (tiny_image() * 1j).astype(np.complex128), None, "complex-valued"),
    "vector_5d": (
        lambda: np.stack([tiny_image()] * 3, axis=-1)[..., None, :],
        "vector",
        "vector-valued (NIfTI intent 'vector'",
    ),
    "vector_4d": (lambda: tiny_image()[..., None], "vector", "vector-valued"),
    "rgb_vector_intent": (
        lambda: np.stack([tiny_image()] * 3, axis=-1)[..., None, :],
        "rgb vector",
        "vector-valued (NIfTI intent 'RGB vector'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_non_grey_images_are_refused_naming_the_file_and_the_reason(tmp_path, case):
    make, intent, reason = CASES[case]
    path = write(tmp_path / f"{case}.nii.gz", make(), intent)
    with pytest.raises(InvalidScanError) as raised:
        load_volume(path)
    assert raised.value.path == str(path)
    assert reason in raised.value.problem


def test_in_memory_volumes_of_the_wrong_type_are_problems_too():
    """DICOM readers and callers build Volumes without a NIfTI header: the check is on values."""
    assert "complex-valued" in image_problems(Volume(tiny_image() + 1j, AFFINE))[0]
    assert "RGB colour image" in image_problems(Volume(rgb_array(), AFFINE))[0]
    assert "non-numeric" in image_problems(Volume(np.full(SHAPE, "a"), AFFINE))[0]
    labels = Volume(tiny_labels().astype(np.complex64), AFFINE)
    assert any("complex-valued" in p for p in label_problems(labels))
    assert image_problems(Volume(tiny_image().astype(np.int16), AFFINE)) == []


def test_suffix_decides_the_container(tmp_path):
    volume = Volume(tiny_image(), AFFINE)
    save_volume(volume, tmp_path / "plain.nii")
    save_volume(volume, tmp_path / "packed.nii.gz")
    assert (tmp_path / "plain.nii").read_bytes()[:2] != b"\x1f\x8b"
    assert (tmp_path / "packed.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    for name in ("plain.nii", "packed.nii.gz"):  # nibabel trusts the name: both must agree
        np.testing.assert_array_equal(nib.load(str(tmp_path / name)).get_fdata(), volume.array)
    assert nifti_suffix_problem("out.nii") is None and nifti_suffix_problem("o.NII.GZ") is None
    assert "name it .nii.gz" in nifti_suffix_problem(tmp_path / "out.img")


def test_save_volumes_writes_each_container_by_name(tmp_path):
    volume = Volume(tiny_image(), AFFINE)
    mask = Volume(tiny_labels(), AFFINE)
    save_volumes([(volume, tmp_path / "image.nii"), (mask, tmp_path / "kept.nii.gz")])
    assert gzip.decompress((tmp_path / "kept.nii.gz").read_bytes())[:4]
    np.testing.assert_array_equal(nib.load(str(tmp_path / "image.nii")).get_fdata(), volume.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii", "kept.nii.gz"]
    with pytest.raises(ValueError, match="out.png: cannot tell which format"):
        save_volumes([(volume, tmp_path / "out.png")])


def test_both_or_neither_when_the_second_volume_cannot_be_written(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    image_path, mask_path = tmp_path / "image.nii.gz", tmp_path / "a_file" / "kept.nii.gz"
    with pytest.raises(OSError) as raised:
        save_volumes(
            [(Volume(tiny_image(), AFFINE), image_path), (Volume(tiny_labels(), AFFINE), mask_path)]
        )
    assert raised.value.filename == str(mask_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no image, no staging


def test_a_failed_rename_removes_what_was_already_placed(tmp_path):
    """The second destination is a folder: the first volume, already renamed, is taken back."""
    (tmp_path / "taken.nii.gz").mkdir()
    (tmp_path / "taken.nii.gz" / "x").write_text("keeps the folder non-empty")
    with pytest.raises(OSError):
        save_volumes(
            [
                (Volume(tiny_image(), AFFINE), tmp_path / "image.nii.gz"),
                (Volume(tiny_labels(), AFFINE), tmp_path / "taken.nii.gz"),
            ]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.nii.gz"]


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_stale_staging_of_dead_writers_is_swept_and_live_ones_kept(tmp_path):
    old = time.time() - 3600
    dead = tmp_path / f".image.nii.gz.tmp-{_dead_pid()}-0123456789ab"
    mine = tmp_path / f".image.nii.gz.tmp-{os.getpid()}-0123456789ab"
    young_dead = tmp_path / f".kept.nii.gz.tmp-{_dead_pid()}-abcdefabcdef"
    unowned_old = tmp_path / ".partition.tmp-00112233aabb"
    unowned_young = tmp_path / ".other.tmp-00112233aabb"
    unrelated = tmp_path / ".hidden"
    for path in (dead, mine, young_dead, unrelated, unowned_young):
        path.write_bytes(b"patient data")
    unowned_old.mkdir()
    (unowned_old / "image.nii.gz").write_bytes(b"patient data")
    for path in (dead, mine, unowned_old):
        os.utime(path, (old, old))
    removed = sweep_stale_staging(tmp_path, unowned_age_s=1800)
    assert sorted(removed) == sorted([dead, unowned_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, young_dead, unrelated, unowned_young)
    )
