"""The study's Table 2 and per-OAR experiment tables from the per-subject metrics.

Input is the long table ``segmentation_metrics`` holds: one row per (subject,
OAR, training method, evaluation method) with ``dice``, ``msd``, ``hd95``,
``mean_hd95`` and an ``omission`` reason. Omitted values are ``nan`` and are
left out of every mean and test, as the study did.

A training method with a failed model (:data:`~defacing_assets.evaluation.scores.MODEL_FAILED`
rows, any fold) gets no mean and no test at all: the surviving folds are not the model the
study asks about. Its cells say why, and each comparison that needed it is a row with no
p-value and the symbol ``model failed``, outside the Benjamini-Hochberg correction.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd

from defacing_assets.evaluation.scores import MODEL_FAILED, failed_models
from defacing_assets.evaluation.stats import compare_pairs

BASELINE = "original"
CASE = ["subject", "oar"]
DEFAULT_MIN_CASES = 5


@dataclass
class Table2:
    """Composite Dice per training (rows) x evaluation (columns) method."""

    cells: pd.DataFrame
    """``mean (SD)`` strings, as published; ``model failed (<reason>)`` for a training
    method whose model failed."""
    n: pd.DataFrame
    """Number of (subject, OAR) values behind each cell; 0 for a failed model's cells, which
    show no value."""
    significance: pd.DataFrame
    """Pairwise tests between training methods within each evaluation column; a pair with a
    failed model is a row without a test (symbol ``model failed``)."""


@dataclass
class ExperimentTable:
    """Per-OAR comparison of each method against ``original`` for one metric."""

    comparisons: pd.DataFrame
    """One row per OAR and method: n, means, p, BH-adjusted p, symbol."""
    summary: pd.DataFrame
    """Mean, SD and count per OAR (rows) and method (columns), over the cases compared."""
    dropped: dict[str, str] = field(default_factory=dict)
    """OARs left out, and ``model trained on <method>`` for each failed model the experiment
    needed, with the reason."""


def compare_unless_failed(
    values: pd.DataFrame,
    group_column: str,
    value_column: str,
    comparisons: list[tuple[str, str]],
    untested: Collection[tuple[str, str]],
    by: str | None = None,
    by_values: Sequence[object] | None = None,
) -> pd.DataFrame:
    """:func:`compare_pairs` on (subject, OAR) cases, except the ``untested`` comparisons,
    which need a failed model.

    Each untested comparison is a row (per ``by`` value: ``by_values``, by default those in
    ``values``) in its place among the tests, with n 0, no means, no p-value and the symbol
    ``model failed``; Benjamini-Hochberg spans only the tests run. Without untested
    comparisons this is :func:`compare_pairs` unchanged.
    """
    tested = compare_pairs(
        values,
        group_column=group_column,
        value_column=value_column,
        pair_on=CASE,
        comparisons=[pair for pair in comparisons if pair not in untested],
        by=by,
    )
    if not untested:
        return tested
    if by is None:
        keys: list[dict[str, object]] = [{}]
    else:
        keys = [
            {by: value} for value in (sorted(set(values[by])) if by_values is None else by_values)
        ]
    blank = pd.DataFrame(
        [
            {
                **key,
                "group_a": a,
                "group_b": b,
                "n": 0,
                "mean_a": math.nan,
                "mean_b": math.nan,
                "p": math.nan,
                "p_adjusted": math.nan,
                "symbol": MODEL_FAILED,
            }
            for key in keys
            for a, b in comparisons
            if (a, b) in untested
        ],
        columns=tested.columns,
    )
    combined = pd.concat([tested, blank], ignore_index=True) if len(tested) else blank
    position = {pair: index for index, pair in enumerate(comparisons)}
    order = [position[pair] for pair in zip(combined["group_a"], combined["group_b"], strict=True)]
    return (
        combined.assign(_order=order)
        .sort_values([*([] if by is None else [by]), "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def table2(metrics: pd.DataFrame, methods: list[str]) -> Table2:
    """Composite Dice mean (SD) and N for every train x evaluation pair, with significance.

    Within each evaluation column every pair of training methods is compared on
    matched (subject, OAR) Dice; Benjamini-Hochberg spans all those tests. A failed
    model's row says why instead (N 0), and its pairs are not tested.
    """
    failed = failed_models(metrics)
    cells = pd.DataFrame(index=pd.Index(methods, name="trained on"), columns=methods, dtype=object)
    counts = pd.DataFrame(0, index=cells.index, columns=methods)
    for trained in methods:
        for evaluated in methods:
            if trained in failed:
                cells.loc[trained, evaluated] = f"{MODEL_FAILED} ({failed[trained]})"
                continue
            values = metrics.loc[
                (metrics["train_defacer"] == trained) & (metrics["eval_defacer"] == evaluated),
                "dice",
            ].dropna()
            counts.loc[trained, evaluated] = len(values)
            cells.loc[trained, evaluated] = (
                f"{values.mean():.3f} ({values.std():.3f})" if len(values) else "-"
            )
    pairs = list(combinations(methods, 2))
    significance = compare_unless_failed(
        metrics[metrics["eval_defacer"].isin(methods)],
        group_column="train_defacer",
        value_column="dice",
        comparisons=pairs,
        untested=[pair for pair in pairs if failed.keys() & set(pair)],
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
    cases is dropped, and the reason recorded. A failed model the experiment needs
    (experiment 1: any training method; 2: the model trained on original) leaves the
    summary, its comparisons are untested rows, and ``dropped`` says why.
    """
    if experiment not in (1, 2):
        raise ValueError(f"experiment must be 1 or 2, got {experiment!r}")
    fixed, varying = (
        ("eval_defacer", "train_defacer") if experiment == 1 else ("train_defacer", "eval_defacer")
    )
    failed = failed_models(metrics)
    needed = methods if experiment == 1 else [BASELINE]
    failing = {method: failed[method] for method in needed if method in failed}
    pairs = [(BASELINE, method) for method in methods if method != BASELINE]
    # Every pair includes original, the one model experiment 2 needs.
    untested = [pair for pair in pairs if failing.keys() & set(pair)]
    rows = metrics[(metrics[fixed] == BASELINE) & metrics[varying].isin(methods)]
    oars = list(dict.fromkeys(rows["oar"]))
    rows = rows[rows[metric].notna() & ~rows["train_defacer"].isin(failing)]
    dropped: dict[str, str] = {}
    if experiment == 2:
        present = rows.groupby(CASE)[varying].nunique()
        common = present[present == len(methods)].index
        rows = rows.set_index(CASE).loc[lambda frame: frame.index.isin(common)].reset_index()
    cases = rows.groupby("oar")["subject"].nunique().reindex(oars, fill_value=0)
    testable = len(untested) < len(pairs) or not pairs
    for oar, count in cases.items():
        if testable and count < min_cases:
            where = " available for every method" if experiment == 2 else ""
            dropped[oar] = f"{count} case(s){where}, fewer than {min_cases}"
    rows = rows[~rows["oar"].isin(dropped)]
    comparisons = compare_unless_failed(
        rows,
        group_column=varying,
        value_column=metric,
        comparisons=pairs,
        untested=untested,
        by="oar",
        by_values=sorted(oar for oar in oars if oar not in dropped),
    )
    for method, reason in failing.items():
        dropped[f"model trained on {method}"] = f"{MODEL_FAILED}: {reason}"
    summary = rows.pivot_table(
        index="oar", columns=varying, values=metric, aggfunc=["mean", "std", "count"]
    )
    return ExperimentTable(comparisons, summary, dropped)
