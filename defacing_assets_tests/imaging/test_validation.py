import numpy as np
import pytest

from defacing_assets.imaging import Volume, image_problems, label_problems
from defacing_assets_tests.builders import AFFINE, tiny_image, tiny_labels


def test_good_image_and_labels_have_no_problems():
    image = Volume(tiny_image(), AFFINE)
    assert image_problems(image) == []
    assert label_problems(Volume(tiny_labels(), AFFINE), image) == []


def test_non_finite_and_constant_images():
    array = tiny_image()
    array[0, 0, :3] = [np.nan, np.inf, -np.inf]
    assert "3 non-finite voxel(s)" in image_problems(Volume(array, AFFINE))[0]
    all_nan = Volume(np.full((2, 2, 2), np.nan, dtype=np.float32), AFFINE)
    assert image_problems(all_nan) == ["every voxel (8) is non-finite (NaN or inf)"]
    constant = Volume(np.full((4, 4, 4), 5, dtype=np.int16), AFFINE)
    assert image_problems(constant) == ["image is constant (every voxel is 5)"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (tiny_labels().astype(np.float32) + 0.25, "not integer-valued"),
        (tiny_labels().astype(np.int16) - 1, "outside 0..8"),
        (tiny_labels() * 9, "outside 0..8"),
    ],
)
def test_bad_label_values(labels, expected):
    problems = label_problems(Volume(labels, AFFINE), Volume(tiny_image(), AFFINE))
    assert any(expected in problem for problem in problems)


def test_integer_valued_float_labels_are_accepted():
    labels = Volume(tiny_labels().astype(np.float64), AFFINE)
    assert label_problems(labels, Volume(tiny_image(), AFFINE)) == []


def test_label_grid_must_match_image_within_tolerance():
    image = Volume(tiny_image(), AFFINE)
    near = AFFINE.copy()
    near[1, 3] += 5e-4
    assert label_problems(Volume(tiny_labels(), near), image) == []
    far = AFFINE.copy()
    far[1, 3] += 2e-3
    assert "affine differs" in label_problems(Volume(tiny_labels(), far), image)[0]
    cropped = Volume(tiny_labels()[:-1], AFFINE)
    assert "differs from image shape" in label_problems(cropped, image)[0]
