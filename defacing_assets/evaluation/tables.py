"""The study's Table 2 and per-OAR experiment tables from the per-subject metrics.

Input is the long table ``segmentation_metrics`` holds: one row per (subject,
OAR, training method, evaluation method) with ``dice``, ``msd``, ``hd95``,
``mean_hd95`` and an ``omission`` reason. Omitted values are ``nan`` and are
left out of every mean and test, as the study did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd

from defacing_assets.evaluation.stats import compare_pairs

BASELINE = "original"
CASE = ["subject", "oar"]
DEFAULT_MIN_CASES = 5


@dataclass
class Table2:
    """Composite Dice per training (rows) x evaluation (columns) method."""

    cells: pd.DataFrame
    """``mean (SD)`` strings, as published."""
    n: pd.DataFrame
    """Number of (subject, OAR) values behind each cell."""
    significance: pd.DataFrame
    """Pairwise tests between training methods within each evaluation column."""


@dataclass
class ExperimentTable:
    """Per-OAR comparison of each method against ``original`` for one metric."""

    comparisons: pd.DataFrame
    """One row per OAR and method: n, means, p, BH-adjusted p, symbol."""
    summary: pd.DataFrame
    """Mean, SD and count per OAR (rows) and method (columns), over the cases compared."""
    dropped: dict[str, str] = field(default_factory=dict)
    """OARs left out, with the reason."""


def table2(metrics: pd.DataFrame, methods: list[str]) -> Table2:
    """Composite Dice mean (SD) and N for every train x evaluation pair, with significance.

    Within each evaluation column every pair of training methods is compared on
    matched (subject, OAR) Dice; Benjamini-Hochberg spans all those tests.
    """
    cells = pd.DataFrame(index=pd.Index(methods, name="trained on"), columns=methods, dtype=object)
    counts = pd.DataFrame(0, index=cells.index, columns=methods)
    for trained in methods:
        for evaluated in methods:
            values = metrics.loc[
                (metrics["train_defacer"] == trained) & (metrics["eval_defacer"] == evaluated),
                "dice",
            ].dropna()
            counts.loc[trained, evaluated] = len(values)
            cells.loc[trained, evaluated] = (
                f"{values.mean():.3f} ({values.std():.3f})" if len(values) else "-"
            )
    significance = compare_pairs(
        metrics[metrics["eval_defacer"].isin(methods)],
        group_column="train_defacer",
        value_column="dice",
        pair_on=CASE,
        comparisons=list(combinations(methods, 2)),
        by="eval_defacer",
    )
    cells.columns.name = counts.columns.name = "evaluated on"
    return Table2(cells, counts, significance)


def experiment_table(
    metrics: pd.DataFrame,
    metric: str,
    experiment: int,
    methods: list[str],
    min_cases: int = DEFAULT_MIN_CASES,
) -> ExperimentTable:
    """Experiment 1 (train on each method, evaluate on original) or 2 (train on original,
    evaluate on each method), per OAR, each method against ``original``.

    Experiment 2 keeps only the (subject, OAR) cases available for every method
    compared, as the study did; in both, an OAR with fewer than ``min_cases``
    cases is dropped, and the reason recorded.
    """
    if experiment not in (1, 2):
        raise ValueError(f"experiment must be 1 or 2, got {experiment!r}")
    fixed, varying = (
        ("eval_defacer", "train_defacer") if experiment == 1 else ("train_defacer", "eval_defacer")
    )
    rows = metrics[(metrics[fixed] == BASELINE) & metrics[varying].isin(methods)]
    oars = list(dict.fromkeys(rows["oar"]))
    rows = rows[rows[metric].notna()]
    dropped: dict[str, str] = {}
    if experiment == 2:
        present = rows.groupby(CASE)[varying].nunique()
        common = present[present == len(methods)].index
        rows = rows.set_index(CASE).loc[lambda frame: frame.index.isin(common)].reset_index()
    cases = rows.groupby("oar")["subject"].nunique().reindex(oars, fill_value=0)
    for oar, count in cases.items():
        if count < min_cases:
            where = " available for every method" if experiment == 2 else ""
            dropped[oar] = f"{count} case(s){where}, fewer than {min_cases}"
    rows = rows[~rows["oar"].isin(dropped)]
    comparisons = compare_pairs(
        rows,
        group_column=varying,
        value_column=metric,
        pair_on=CASE,
        comparisons=[(BASELINE, method) for method in methods if method != BASELINE],
        by="oar",
    )
    summary = rows.pivot_table(
        index="oar", columns=varying, values=metric, aggfunc=["mean", "std", "count"]
    )
    return ExperimentTable(comparisons, summary, dropped)
