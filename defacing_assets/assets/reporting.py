"""stats_tables: Table 2, the per-OAR experiment tables and Figures 3, 4, A1, A2."""

from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AutomationCondition, MetadataValue, Output, asset

from defacing_assets.assets.inputs import PRESENT_PARTITIONS, concat_partitions
from defacing_assets.assets.metadata import png_metadata
from defacing_assets.evaluation.plots import oar_bars
from defacing_assets.evaluation.tables import experiment_table, table2
from defacing_assets.resources import StudyConfig

METRICS = {"dice": "Dice", "msd": "MSD (mm)", "hd95": "HD95 (mm)", "mean_hd95": "mean HD95 (mm)"}
FIGURES = {
    "figure3": (1, "dice"),
    "figure4": (2, "dice"),
    "figureA1": (1, "msd"),
    "figureA2": (2, "msd"),
}
"""Experiment 1 (trained on each set, evaluated on original) and 2 (trained on
original, evaluated on each set), Dice in the main figures, MSD in the appendix."""
EXPERIMENTS = {1: "trained on each set, evaluated on original", 2: "trained on original"}


def _write_table(folder: Path, name: str, table: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{name}.csv")
    table.reset_index().to_parquet(folder / f"{name}.parquet", index=False)


@asset(
    group_name="evaluation",
    ins={"segmentation_metrics": PRESENT_PARTITIONS},
    automation_condition=AutomationCondition.eager(),
)
def stats_tables(
    context: AssetExecutionContext,
    study: StudyConfig,
    study_cohort: pd.DataFrame,
    segmentation_metrics: dict[str, pd.DataFrame],
):
    """Every comparison of the study in one long table; tables as CSV and Parquet under
    ``<study>/tables``, figures as PNG under ``<study>/figures``."""
    metrics = concat_partitions(segmentation_metrics)
    methods = list(study_cohort.attrs.get("compared_methods", []))
    study_dir = Path(study.study_dir)
    tables_dir, figures_dir = study_dir / "tables", study_dir / "figures"
    if metrics.empty:
        context.log.warning("no segmentation_metrics stored yet: nothing to compare")
        return Output(pd.DataFrame(), metadata={"comparisons": 0})

    table = table2(metrics, methods)
    _write_table(tables_dir, "table2", table.cells)
    _write_table(tables_dir, "table2_n", table.n)
    _write_table(tables_dir, "table2_significance", table.significance)
    comparisons = [table.significance.assign(table="table2", metric="dice")]
    metadata: dict = {
        "table2": MetadataValue.md(table.cells.to_markdown()),
        "table2_n": MetadataValue.md(table.n.to_markdown()),
        "table2_significance": MetadataValue.md(table.significance.to_markdown(index=False)),
    }
    experiments = {}
    for experiment in EXPERIMENTS:
        for metric in METRICS:
            result = experiment_table(metrics, metric, experiment, methods)
            experiments[experiment, metric] = result
            name = f"experiment{experiment}_{metric}"
            _write_table(tables_dir, name, result.comparisons)
            comparisons.append(result.comparisons.assign(table=name, metric=metric))
            if result.dropped:
                metadata[f"{name}_dropped"] = MetadataValue.json(result.dropped)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, (experiment, metric) in FIGURES.items():
        png = oar_bars(
            experiments[experiment, metric],
            METRICS[metric],
            f"Experiment {experiment} ({EXPERIMENTS[experiment]}): {METRICS[metric]}",
        )
        (figures_dir / f"{name}.png").write_bytes(png)
        metadata[name] = png_metadata(png, name)
    long = pd.concat(comparisons, ignore_index=True)
    metadata["comparisons"] = len(long)
    metadata["tables_folder"] = MetadataValue.path(str(tables_dir))
    return Output(long, metadata=metadata)
