"""The model quality gate: which trained U-Nets the study may use.

A model trained on NaN scores a validation Dice of 0 and still yields a
confident-looking Table 2, so every model is gated before anything downstream
reads it: its history must be finite and the validation Dice of the stored
(best) epoch at least the profile's ``min_val_dice``. A model that fails is kept
for inspection but marked failed; predictions skip it and the report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CHECKED_COLUMNS = ["train_loss", "val_loss", "val_dice"]


def model_problems(history: pd.DataFrame, best_epoch: int, min_val_dice: float) -> list[str]:
    """Why a model with this history must not be used; empty when it passes."""
    if history.empty:
        return ["no epoch was trained"]
    problems = []
    finite = np.isfinite(history[CHECKED_COLUMNS].to_numpy(dtype=float)).all(axis=1)
    if not finite.all():
        epochs = ", ".join(str(int(e) + 1) for e in history.loc[~finite, "epoch"])
        problems.append(f"non-finite losses or Dice at epoch {epochs}")
    dice = float(history["val_dice"].iloc[best_epoch]) if 0 <= best_epoch < len(history) else np.nan
    if not dice >= min_val_dice:
        problems.append(
            f"validation Dice {dice:.3f} at the best epoch ({best_epoch + 1}) is below the "
            f"floor {min_val_dice:g}"
        )
    return problems


def quality_record(history: pd.DataFrame, best_epoch: int, min_val_dice: float) -> dict:
    """What ``config.json`` stores under ``quality``: the floor, the verdict and the reasons."""
    problems = model_problems(history, best_epoch, min_val_dice)
    return {"min_val_dice": min_val_dice, "passed": not problems, "problems": problems}
