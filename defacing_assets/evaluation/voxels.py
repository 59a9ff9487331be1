"""How many voxels of each OAR a defacer kept (Table 1 and Figure 2 are built from this)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from defacing_assets.cohort.labels import LABEL_NAMES
from defacing_assets.imaging.volume import Volume

VOXEL_RATIO_COLUMNS = [
    "oar",
    "label",
    "voxels_before",
    "voxels_kept",
    "ratio",
    "completely_removed",
]


def voxel_ratios(labels: Volume, kept_mask: Volume) -> pd.DataFrame:
    """Per OAR: voxels in the label map, how many the defacer left unchanged, their ratio.

    ``ratio`` is NaN for an OAR the subject does not have (nothing to lose);
    ``completely_removed`` is True only when the OAR existed and no voxel survived.
    """
    if not labels.same_grid(kept_mask):
        raise ValueError(
            f"kept mask grid {kept_mask.shape} differs from the label grid {labels.shape}"
        )
    label_array = labels.array.astype(np.int64).ravel()
    kept = kept_mask.array.ravel() > 0
    before = np.bincount(label_array, minlength=9)
    survived = np.bincount(label_array[kept], minlength=9)
    rows = []
    for label, name in LABEL_NAMES.items():
        n_before, n_kept = int(before[label]), int(survived[label])
        rows.append(
            {
                "oar": name,
                "label": label,
                "voxels_before": n_before,
                "voxels_kept": n_kept,
                "ratio": n_kept / n_before if n_before else float("nan"),
                "completely_removed": bool(n_before > 0 and n_kept == 0),
            }
        )
    return pd.DataFrame(rows, columns=VOXEL_RATIO_COLUMNS)
