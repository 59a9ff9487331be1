"""Table 1 (OARs completely removed) and Figure 2 (kept-voxel ratio per OAR) of the study."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from defacing_assets.cohort.labels import OAR_LABELS
from defacing_assets.imaging.thumbnail import figure_png


def table1(ratios: pd.DataFrame, qc: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Counts per OAR and method, as in the study's Table 1.

    Args:
        ratios: voxel ratios with ``subject`` and ``defacer`` columns.
        qc: one row per (subject, defacer) with a boolean ``passed``.

    Rows are OARs (completely removed after successful defacing), "Total" and
    "Unavailable incl. QC failures" (every OAR of a subject that failed QC
    counts as unavailable too); percents are of all OARs present over all
    scans, as the study's 122 (28%) for pydeface is 122 of 55 x 8.
    """
    merged = ratios.merge(qc[["subject", "defacer", "passed"]], on=["subject", "defacer"])
    present = merged[merged["voxels_before"] > 0]
    table = {}
    for method in methods:
        rows = present[present["defacer"] == method]
        passed = rows[rows["passed"]]
        removed = passed.groupby("oar")["completely_removed"].sum()
        column = {oar: int(removed.get(oar, 0)) for oar in OAR_LABELS}
        total, n_present = int(passed["completely_removed"].sum()), max(len(rows), 1)
        column["Total"] = f"{total} ({100 * total / n_present:.0f}%)"
        unavailable = total + int((~rows["passed"]).sum())
        column["Unavailable incl. QC failures"] = (
            f"{unavailable} ({100 * unavailable / n_present:.0f}%)"
        )
        table[method] = column
    return pd.DataFrame(table).rename_axis("OAR")


def figure2(ratios: pd.DataFrame, qc: pd.DataFrame, methods: list[str]) -> bytes:
    """PNG: mean and SD of the kept-voxel ratio per OAR and method, over QC-passed scans.

    Methods with no QC-passed scan are left out, as in the study's figure.
    """
    merged = ratios.merge(qc[["subject", "defacer", "passed"]], on=["subject", "defacer"])
    merged = merged[merged["passed"] & (merged["voxels_before"] > 0)]
    methods = [m for m in methods if (merged["defacer"] == m).any()]  # as the study: passed ones
    oars = list(OAR_LABELS)
    figure, axis = plt.subplots(figsize=(9, 4), dpi=100)
    width = 0.8 / max(len(methods), 1)
    for offset, method in enumerate(methods):
        rows = merged[merged["defacer"] == method]
        stats = rows.groupby("oar")["ratio"].agg(["mean", "std"]).reindex(oars)
        n_scans = rows["subject"].nunique()
        axis.bar(
            np.arange(len(oars)) + offset * width,
            stats["mean"].fillna(0),
            width,
            yerr=stats["std"].fillna(0),
            capsize=2,
            label=f"{method} (N={n_scans})",
        )
    axis.set_xticks(np.arange(len(oars)) + width * (len(methods) - 1) / 2)
    axis.set_xticklabels(oars, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("ratio of OAR voxels kept")
    axis.set_ylim(0, 1.1)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure_png(figure)
