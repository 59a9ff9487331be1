"""All of the study's comparisons from the per-subject metrics: tables and figures."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from defacing_assets.evaluation.plots import oar_bars
from defacing_assets.evaluation.tables import (
    DEFAULT_MIN_CASES,
    ExperimentTable,
    Table2,
    experiment_table,
    table2,
)

METRICS = {"dice": "Dice", "msd": "MSD (mm)", "hd95": "HD95 (mm)", "mean_hd95": "mean HD95 (mm)"}
EXPERIMENTS = {
    1: "trained on each set, evaluated on original",
    2: "trained on original, evaluated on each set",
}
FIGURES = {
    "figure3": (1, "dice"),
    "figure4": (2, "dice"),
    "figureA1": (1, "msd"),
    "figureA2": (2, "msd"),
}
"""Dice in the main figures, MSD in the appendix."""


@dataclass
class StudyResults:
    table2: Table2
    experiments: dict[str, ExperimentTable]
    """``experiment<1|2>_<metric>`` -> per-OAR comparison."""
    figures: dict[str, bytes]
    """``figure3``, ``figure4``, ``figureA1``, ``figureA2`` -> PNG."""


def study_results(
    metrics: pd.DataFrame, methods: list[str], min_cases: int = DEFAULT_MIN_CASES
) -> StudyResults:
    """Table 2, both experiments for all four metrics, and the four per-OAR figures."""
    experiments = {
        f"experiment{experiment}_{metric}": experiment_table(
            metrics, metric, experiment, methods, min_cases
        )
        for experiment in EXPERIMENTS
        for metric in METRICS
    }
    figures = {
        name: oar_bars(
            experiments[f"experiment{experiment}_{metric}"],
            METRICS[metric],
            f"Experiment {experiment} ({EXPERIMENTS[experiment]}): {METRICS[metric]}",
        )
        for name, (experiment, metric) in FIGURES.items()
    }
    return StudyResults(table2(metrics, methods), experiments, figures)
