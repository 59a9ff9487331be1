"""Per-OAR scores: the kept-voxel reference, omissions with reasons, distances in mm."""

import math

import numpy as np
import pandas as pd
import pytest

from defacing_assets.evaluation.scores import (
    ABSENT,
    EMPTY_PREDICTION,
    OUTSIDE_COHORT,
    REMOVED,
    failed_model_subject,
    failed_models,
    omitted_subject,
    score_prediction,
)
from defacing_assets.imaging.volume import Volume

AFFINE = np.diag([0.5, 0.5, 2.0, 1.0])


def _volume(array) -> Volume:
    return Volume(np.asarray(array), AFFINE)


@pytest.fixture
def annotation() -> np.ndarray:
    """Parotid L (7) as a box, submandibular L (1) as a box, nothing else annotated."""
    labels = np.zeros((40, 40, 10), dtype=np.uint8)
    labels[5:15, 5:15, 2:6] = 7
    labels[25:35, 25:35, 2:6] = 1
    return labels


def _scores(table):
    return table.set_index("oar")


def test_perfect_prediction_scores_one_and_zero_distance(annotation):
    table = _scores(score_prediction(_volume(annotation), _volume(annotation)))
    assert table.loc["Parotid_L", "dice"] == 1.0
    assert table.loc["Parotid_L", "msd"] == 0.0 and table.loc["Parotid_L", "hd95"] == 0.0
    assert table.loc["Parotid_L", "omission"] == ""
    assert table.loc["Parotid_R", "omission"] == ABSENT
    assert math.isnan(table.loc["Parotid_R", "dice"])


def test_reference_is_what_the_evaluation_method_kept(annotation):
    kept = np.ones(annotation.shape, dtype=np.uint8)
    kept[20:, :, :] = 0  # the method erased the submandibular gland and nothing else
    kept[:10, :, :] = 0  # ... and half the parotid
    prediction = annotation.copy()
    prediction[:10] = 0  # the model segments only what is left
    prediction[20:] = 0
    table = _scores(score_prediction(_volume(prediction), _volume(annotation), _volume(kept)))
    assert table.loc["Glnd_Submand_L", "omission"] == REMOVED
    assert table.loc["Parotid_L", "dice"] == 1.0
    assert table.loc["Parotid_L", "reference_voxels"] == 5 * 10 * 4

    unrestricted = _scores(
        score_prediction(_volume(prediction), _volume(annotation), _volume(kept), "original")
    )
    assert unrestricted.loc["Parotid_L", "dice"] == pytest.approx(2 * 200 / (200 + 400))
    assert unrestricted.loc["Glnd_Submand_L", "dice"] == 0.0


def test_empty_prediction_scores_dice_zero_without_distances(annotation):
    prediction = annotation.copy()
    prediction[prediction == 1] = 0
    table = _scores(score_prediction(_volume(prediction), _volume(annotation)))
    row = table.loc["Glnd_Submand_L"]
    assert row["dice"] == 0.0 and math.isnan(row["msd"]) and row["omission"] == EMPTY_PREDICTION


def test_shift_along_the_thick_axis_is_measured_in_mm(annotation):
    prediction = np.roll(annotation, 1, axis=2)  # one 2 mm slice up
    table = _scores(score_prediction(_volume(prediction), _volume(annotation)))
    assert table.loc["Parotid_L", "hd95"] == pytest.approx(2.0)


def test_prediction_on_another_grid_is_refused(annotation):
    other = Volume(annotation, np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="prediction grid"):
        score_prediction(other, _volume(annotation))


def test_subject_outside_the_cohort_is_recorded_without_values():
    rows = omitted_subject()
    assert len(rows) == 8 and (rows["omission"] == OUTSIDE_COHORT).all()
    assert rows[["dice", "msd", "hd95", "mean_hd95"]].isna().all().all()


def test_subject_of_a_failed_model_is_recorded_without_values_and_with_the_reason():
    rows = failed_model_subject("fold 2: best validation Dice 0.004 below the demo floor 0.3")
    expected = "model failed: fold 2: best validation Dice 0.004 below the demo floor 0.3"
    assert (rows["omission"] == expected).all()
    pd.testing.assert_frame_equal(
        rows.drop(columns="omission"), omitted_subject().drop(columns="omission")
    )


def test_failed_models_names_each_training_method_once_with_every_reason():
    def rows(trained: str, table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(train_defacer=trained, eval_defacer="original")

    scored = omitted_subject().assign(omission="", dice=0.8)
    metrics = pd.concat(
        [
            rows("pydeface", failed_model_subject("fold 2: non-finite training loss")),
            rows("pydeface", failed_model_subject("fold 0: best validation Dice 0.1")),
            rows("pydeface", failed_model_subject("fold 2: non-finite training loss")),
            rows("original", scored),
            rows("original", omitted_subject()),
        ],
        ignore_index=True,
    )
    assert failed_models(metrics) == {
        "pydeface": "fold 0: best validation Dice 0.1; fold 2: non-finite training loss"
    }
