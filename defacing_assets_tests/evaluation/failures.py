"""A constructed study in which one training method's model failed the quality gate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defacing_assets.evaluation.scores import MODEL_FAILED
from defacing_assets_tests.builders import SUBJECTS

REASON = "fold 0: best validation Dice 0.004 below the demo floor 0.3"


def with_failed_model(
    metrics: pd.DataFrame, trained: str, subjects: list[str] = SUBJECTS[:2]
) -> pd.DataFrame:
    """The rows segmentation_metrics writes when fold 0 of ``trained`` failed: its test
    subjects keep every OAR row, with no values and the reason; other folds score as usual."""
    failed = (metrics["train_defacer"] == trained) & metrics["subject"].isin(subjects)
    metrics = metrics.copy()
    metrics.loc[failed, "dice"] = np.nan
    metrics.loc[failed, "omission"] = f"{MODEL_FAILED}: {REASON}"
    return metrics
