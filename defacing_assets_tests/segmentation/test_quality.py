"""The model quality gate: finite history and validation Dice over the floor."""

from __future__ import annotations

import math

import pandas as pd

from defacing_assets.segmentation.quality import model_problems, quality_record


def _history(val_dice: list[float], train_loss: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": range(len(val_dice)),
            "train_loss": [train_loss] * len(val_dice),
            "val_loss": [1.0 - d for d in val_dice],
            "val_dice": val_dice,
        }
    )


def test_a_finite_model_over_the_floor_passes() -> None:
    assert model_problems(_history([0.2, 0.6, 0.5]), best_epoch=1, min_val_dice=0.3) == []


def test_the_stored_epochs_dice_is_gated() -> None:
    [problem] = model_problems(_history([0.2, 0.6]), best_epoch=0, min_val_dice=0.3)
    assert problem == "validation Dice 0.200 at the best epoch (1) is below the floor 0.3"


def test_a_nan_history_fails_with_its_epochs() -> None:
    record = quality_record(_history([0.0, 0.0], train_loss=math.nan), 1, 0.0)
    assert not record["passed"]
    assert record["problems"] == ["non-finite losses or Dice at epoch 1, 2"]


def test_no_epochs_fail() -> None:
    assert model_problems(_history([]), best_epoch=-1, min_val_dice=0.3) == ["no epoch was trained"]
