import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial import cKDTree

from defacing_assets.evaluation.metrics import (
    _directed_surface_distances,
    dice,
    hausdorff95,
    mean_hausdorff95,
    mean_surface_distance,
    omission_reason,
)

SPACING = (0.5, 0.5, 2.0)


def _cube(shape=(8, 8, 9), start=(2, 2, 2), side=4):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


# Hand derivation for a 4x4x4 cube A and the same cube B shifted by one voxel along
# axis 2 (2.0 mm), spacing (0.5, 0.5, 2.0). Local coordinates i, j, k in 0..3 for A,
# k in 1..4 for B. Surface (foreground voxel with a background 6-neighbour): 64 - 2^3 = 56
# voxels each. From A's surface to B's surface:
#   side-wall voxels (i or j in {0,3}) at k = 1..3: 3 * 12 = 36, also on B's wall -> 0 mm
#   side-wall voxels at k = 0: 12; B has nothing at k = 0, nearest is (i,j,1) -> 2.0 mm
#   bottom-face interior (i,j in {1,2}, k = 0): 4; nearest (i,j,1) on B's bottom -> 2.0 mm
#   top-face interior (k = 3): 4; B's side wall one voxel away in-plane -> 0.5 mm
# mean A->B = (16 * 2.0 + 4 * 0.5) / 56 = 34/56 = 17/28 mm; B->A is the mirror image, so
# MSD = 1/2 (17/28 + 17/28) = 17/28 mm.
# One-way p95 (linear): sorted 36 x 0, 4 x 0.5, 16 x 2.0; position 0.95 * 55 = 52.25 lies
# in the 2.0 block (indices 40..55) -> 2.0 mm both ways, so HD95 = mean HD95 = 2.0 mm.
# Dice: overlap 4 * 4 * 3 = 48, 2 * 48 / (64 + 64) = 0.75.
CUBE_A = _cube()
CUBE_B = _cube(start=(2, 2, 3))
SHIFTED_MSD = 17 / 28
SHIFTED_HD95 = 2.0


def _surface_mm(mask, spacing):
    """Surface voxels as MONAI defines them, in mm, for brute-force references."""
    edges = mask ^ binary_erosion(mask)
    return np.argwhere(edges) * np.asarray(spacing)


def _brute_force(pred, ref, spacing):
    p, t = _surface_mm(pred, spacing), _surface_mm(ref, spacing)
    to_ref = cKDTree(t).query(p)[0]
    to_pred = cKDTree(p).query(t)[0]
    p95 = (np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    return {
        "msd": 0.5 * (to_ref.mean() + to_pred.mean()),
        "hd95": max(p95),
        "mean_hd95": 0.5 * sum(p95),
    }


def _ellipsoid(shape, spacing, centre_mm, radii_mm):
    grids = np.indices(shape, dtype=float)
    total = sum(
        ((g * s - c) / r) ** 2
        for g, s, c, r in zip(grids, spacing, centre_mm, radii_mm, strict=True)
    )
    return total <= 1.0


SPHERE_SHAPE = (48, 48, 14)
SPHERE_REF = _ellipsoid(SPHERE_SHAPE, SPACING, (12.0, 12.0, 13.0), (8.0, 8.0, 8.0))
SPHERE_PRED = _ellipsoid(SPHERE_SHAPE, SPACING, (13.3, 11.1, 15.4), (7.0, 7.5, 7.2))


def test_identical_masks_have_zero_distances():
    assert [
        mean_surface_distance(CUBE_A, CUBE_A, SPACING),
        hausdorff95(CUBE_A, CUBE_A, SPACING),
        mean_hausdorff95(CUBE_A, CUBE_A, SPACING),
    ] == [0.0, 0.0, 0.0]


def test_identical_masks_have_dice_one():
    assert dice(CUBE_A, CUBE_A) == 1.0


def test_shifted_cube_dice_matches_hand_count():
    assert dice(CUBE_A, CUBE_B) == pytest.approx(0.75, abs=1e-12)


def test_shifted_cube_msd_matches_hand_derivation():
    assert mean_surface_distance(CUBE_A, CUBE_B, SPACING) == pytest.approx(SHIFTED_MSD, abs=1e-6)


def test_shifted_cube_hd95_matches_hand_derivation():
    assert hausdorff95(CUBE_A, CUBE_B, SPACING) == pytest.approx(SHIFTED_HD95, abs=1e-6)


def test_shifted_cube_mean_hd95_matches_hand_derivation():
    assert mean_hausdorff95(CUBE_A, CUBE_B, SPACING) == pytest.approx(SHIFTED_HD95, abs=1e-6)


def test_msd_averages_the_two_directions_instead_of_pooling():
    # Reference: the cube (56 surface voxels). Prediction: the cube plus one stray voxel
    # four slices above its top corner, 4 * 2.0 = 8 mm away. pred -> ref: 56 zeros and 8 mm
    # over 57 voxels; ref -> pred: all 0. Study MSD = 1/2 (8/57 + 0) = 4/57 mm, whereas
    # pooling both directions (MONAI symmetric ASD, MedPy assd) would give 8/113 mm.
    ref = _cube(shape=(8, 8, 12))
    pred = ref.copy()
    pred[2, 2, 9] = True
    assert mean_surface_distance(pred, ref, SPACING) == pytest.approx(4 / 57, abs=1e-7)


def test_sphere_pair_matches_brute_force_kdtree():
    expected = _brute_force(SPHERE_PRED, SPHERE_REF, SPACING)
    got = {
        "msd": mean_surface_distance(SPHERE_PRED, SPHERE_REF, SPACING),
        "hd95": hausdorff95(SPHERE_PRED, SPHERE_REF, SPACING),
        "mean_hd95": mean_hausdorff95(SPHERE_PRED, SPHERE_REF, SPACING),
    }
    assert got == pytest.approx(expected, rel=1e-6)


def test_bounding_box_crop_equals_full_volume():
    # The reference touches the grid border (rows 0 and 47): the crop is clipped there.
    ref = SPHERE_REF.copy()
    ref[0:3, 20:30, 2:6] = True
    ref[45:48, 20:30, 2:6] = True
    cropped = _directed_surface_distances(SPHERE_PRED, ref, SPACING, crop=True)
    full = _directed_surface_distances(SPHERE_PRED, ref, SPACING, crop=False)
    assert all(np.array_equal(c, f) for c, f in zip(cropped, full, strict=True))


@pytest.mark.parametrize("metric", [mean_surface_distance, hausdorff95, mean_hausdorff95])
def test_empty_prediction_gives_nan_with_warning(metric):
    with pytest.warns(RuntimeWarning, match="empty prediction"):
        value = metric(np.zeros_like(CUBE_A), CUBE_A, SPACING)
    assert math.isnan(value)


@pytest.mark.parametrize("metric", [mean_surface_distance, hausdorff95, mean_hausdorff95])
def test_empty_reference_gives_nan_with_warning(metric):
    with pytest.warns(RuntimeWarning, match="empty reference"):
        value = metric(CUBE_A, np.zeros_like(CUBE_A), SPACING)
    assert math.isnan(value)


def test_dice_of_two_empty_masks_is_nan():
    empty = np.zeros_like(CUBE_A)
    with pytest.warns(RuntimeWarning, match="empty"):
        assert math.isnan(dice(empty, empty))


def test_dice_with_empty_prediction_is_zero():
    assert dice(np.zeros_like(CUBE_A), CUBE_A) == 0.0


@pytest.mark.parametrize(
    ("pred", "ref", "reason"),
    [
        (CUBE_A, np.zeros_like(CUBE_A), "empty reference"),
        (np.zeros_like(CUBE_A), np.zeros_like(CUBE_A), "empty reference"),
        (np.zeros_like(CUBE_A), CUBE_A, "empty prediction"),
        (CUBE_A, CUBE_B, None),
    ],
)
def test_omission_reason_names_the_empty_input(pred, ref, reason):
    assert omission_reason(pred, ref) == reason


def test_shape_mismatch_error_quotes_both_shapes():
    with pytest.raises(ValueError, match=r"\(8, 8, 9\).*\(8, 8, 10\)"):
        mean_surface_distance(CUBE_A, np.zeros((8, 8, 10), dtype=bool), SPACING)


def test_spacing_length_mismatch_raises():
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(CUBE_A, CUBE_B, (0.5, 2.0))


def test_integer_label_masks_are_treated_as_foreground():
    assert dice(CUBE_A.astype(np.uint8) * 3, CUBE_B.astype(np.uint8)) == pytest.approx(0.75)
