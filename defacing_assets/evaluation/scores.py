"""Per-OAR scores of one predicted label map against the annotation, with omission reasons.

The reference for an evaluation method is, by default, the annotation restricted
to the voxels that method kept (``reference="kept"``): what defacing erased
cannot be segmented, and the study scored what was left. ``reference="original"``
scores against the full annotation instead. An OAR without reference voxels is
omitted with the reason; an empty prediction scores Dice 0 but no distances.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from defacing_assets.cohort.labels import LABEL_NAMES
from defacing_assets.evaluation.metrics import dice, surface_metrics
from defacing_assets.imaging.volume import Volume

ReferencePolicy = Literal["kept", "original"]

SCORE_COLUMNS = [
    "oar",
    "label",
    "reference_voxels",
    "predicted_voxels",
    "dice",
    "msd",
    "hd95",
    "mean_hd95",
    "omission",
]

ABSENT = "absent from the annotation"
REMOVED = "completely removed by defacing"
EMPTY_PREDICTION = "empty prediction: distances omitted"
OUTSIDE_COHORT = "subject outside the cohort (QC failed for a compared method, or no labels)"
MODEL_FAILED = "model failed"
"""Omission prefix of a subject whose fold's model failed the quality gate (non-finite training
history or validation Dice under the floor); the reason follows after ": "."""


def _unscored_subject(omission: str) -> pd.DataFrame:
    """The rows of a subject that is not scored at all: every OAR, no values, one reason."""
    return pd.DataFrame(
        [
            {
                "oar": name,
                "label": label,
                "reference_voxels": 0,
                "predicted_voxels": 0,
                "dice": math.nan,
                "msd": math.nan,
                "hd95": math.nan,
                "mean_hd95": math.nan,
                "omission": omission,
            }
            for label, name in LABEL_NAMES.items()
        ],
        columns=SCORE_COLUMNS,
    )


def omitted_subject() -> pd.DataFrame:
    """A subject outside the cohort: every OAR, no values."""
    return _unscored_subject(OUTSIDE_COHORT)


def failed_model_subject(reason: str) -> pd.DataFrame:
    """A test subject of a fold whose model failed the quality gate: every OAR, no values,
    so the failure stays visible downstream instead of the subject silently disappearing."""
    return _unscored_subject(f"{MODEL_FAILED}: {reason}")


def failed_models(metrics: pd.DataFrame) -> dict[str, str]:
    """Training method -> why its model failed (unique reasons, sorted, joined by "; "), for
    every training method with any model-failed row: one of its folds failed, so a mean or a
    test over the surviving folds would not be the model the study asks about."""
    if metrics.empty or "omission" not in metrics:
        return {}
    prefix = f"{MODEL_FAILED}: "
    omission = metrics["omission"].fillna("").astype(str)
    failed = omission.str.startswith(prefix)
    reasons = omission[failed].str.removeprefix(prefix)
    return {
        str(method): "; ".join(sorted(set(group)))
        for method, group in reasons.groupby(metrics.loc[failed, "train_defacer"], sort=True)
    }


def score_prediction(
    prediction: Volume,
    labels: Volume,
    kept_mask: Volume | None = None,
    reference: ReferencePolicy = "kept",
) -> pd.DataFrame:
    """One row per OAR: Dice, MSD, HD95, mean HD95 (mm) and why any of them is missing.

    Args:
        prediction: predicted label map on the annotation's grid.
        labels: the original annotation.
        kept_mask: voxels the evaluation method kept (1) — needed for ``reference="kept"``;
            ``None`` means nothing was removed.
        reference: see the module docstring.

    Raises:
        ValueError: grids differ, or the policy is unknown.
    """
    if reference not in ("kept", "original"):
        raise ValueError(f"unknown reference policy {reference!r}; use 'kept' or 'original'")
    for name, volume in (("prediction", prediction), ("kept mask", kept_mask)):
        if volume is not None and not labels.same_grid(volume):
            raise ValueError(
                f"{name} grid {volume.shape} differs from the annotation grid {labels.shape}"
            )
    annotation = np.asarray(labels.array).astype(np.int64)
    kept = (
        np.asarray(kept_mask.array) > 0
        if kept_mask is not None and reference == "kept"
        else np.ones(annotation.shape, dtype=bool)
    )
    predicted_labels = np.asarray(prediction.array).astype(np.int64)
    rows = []
    for label, name in LABEL_NAMES.items():
        annotated = annotation == label
        ref = annotated & kept
        pred = predicted_labels == label
        row = {
            "oar": name,
            "label": label,
            "reference_voxels": int(ref.sum()),
            "predicted_voxels": int(pred.sum()),
            "dice": math.nan,
            "msd": math.nan,
            "hd95": math.nan,
            "mean_hd95": math.nan,
            "omission": "",
        }
        if not annotated.any():
            row["omission"] = ABSENT
        elif not ref.any():
            row["omission"] = REMOVED
        else:
            row["dice"] = dice(pred, ref)
            if not pred.any():
                row["omission"] = EMPTY_PREDICTION
            else:
                distances = surface_metrics(pred, ref, labels.spacing)
                row["msd"] = distances.mean_surface_distance
                row["hd95"] = distances.hausdorff95
                row["mean_hd95"] = distances.mean_hausdorff95
        rows.append(row)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
