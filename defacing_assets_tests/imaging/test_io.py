import gzip

import nibabel as nib
import numpy as np
import pytest
from upath import UPath

from defacing_assets.imaging import InvalidScanError, Volume, load_volume, save_volume
from defacing_assets.imaging.atomic import atomic_directory
from defacing_assets_tests.builders import AFFINE, SHAPE, tiny_image, write_bad_subjects


def test_round_trip_keeps_values_and_geometry(tmp_path):
    volume = Volume(tiny_image(), AFFINE)
    save_volume(volume, tmp_path / "v.nii.gz")
    loaded = load_volume(tmp_path / "v.nii.gz")
    assert loaded.same_grid(volume)
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert loaded.spacing == (2.0, 2.0, 3.0)
    assert loaded.orientation == "RAS"


def test_written_header_carries_no_identifying_text(tmp_path):
    source = nib.Nifti1Image(tiny_image(), AFFINE)
    source.header["descrip"] = b"Jane Doe 1970-01-01"
    source.header["aux_file"] = b"MRN123"
    nib.save(source, str(tmp_path / "in.nii.gz"))
    save_volume(load_volume(tmp_path / "in.nii.gz"), tmp_path / "out.nii.gz")
    header = nib.load(str(tmp_path / "out.nii.gz")).header
    for field in ("descrip", "aux_file", "db_name", "intent_name"):
        assert header[field].item() in (b"", "")


def test_identical_volumes_write_identical_bytes(tmp_path):
    volume = Volume(tiny_image(), AFFINE)
    save_volume(volume, tmp_path / "a.nii.gz")
    save_volume(volume, tmp_path / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


@pytest.mark.parametrize(
    "case",
    ["random_bytes", "truncated", "plain_text", "four_d", "degenerate_affine"],
)
def test_container_problems_name_the_file(tmp_path, case):
    expected = write_bad_subjects(tmp_path)
    path = tmp_path / case / "image.nii.gz"
    with pytest.raises(InvalidScanError) as raised:
        load_volume(path)
    assert str(path) in str(raised.value)
    assert expected[case] in str(raised.value)


def test_empty_and_missing_files_are_named(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidScanError, match="empty.nii.gz: file is empty"):
        load_volume(tmp_path / "empty.nii.gz")
    with pytest.raises(InvalidScanError, match="missing.nii.gz: file not found"):
        load_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(InvalidScanError, match="folder.nii.gz: is a folder, not a NIfTI file"):
        load_volume(tmp_path / "folder.nii.gz")


def test_trailing_singleton_dimensions_are_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(tiny_image()[..., None], AFFINE), str(tmp_path / "x.nii.gz"))
    assert load_volume(tmp_path / "x.nii.gz").shape == SHAPE


def test_truncated_gzip_of_valid_header_is_caught(tmp_path):
    data = gzip.compress(nib.Nifti1Image(tiny_image(), AFFINE).to_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(data[:-200])
    with pytest.raises(InvalidScanError, match="cut.nii.gz"):
        load_volume(tmp_path / "cut.nii.gz")


def test_failed_atomic_directory_keeps_previous_contents(tmp_path):
    target = UPath(tmp_path / "partition")
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "a.txt").write_text("half-written")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in UPath(tmp_path).iterdir()] == ["partition"]


def test_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        save_volume(Volume(tiny_image(), AFFINE), tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
