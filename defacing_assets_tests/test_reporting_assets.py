"""stats_tables on a constructed study: every table and figure written, comparisons in one table."""

import pandas as pd
from dagster import build_asset_context

from defacing_assets.assets.reporting import stats_tables
from defacing_assets.evaluation.results import FIGURES
from defacing_assets.resources import StudyConfig
from defacing_assets_tests.builders import METHODS, study_metrics
from defacing_assets_tests.evaluation.failures import REASON, with_failed_model

TABLE1 = pd.DataFrame({"OAR": ["LN_Neck_III_L", "Total"], "pydeface": ["8", "8 (50%)"]})


def _stats_tables(tmp_path, metrics: pd.DataFrame):
    cohort = pd.DataFrame({"subject": sorted(set(metrics["subject"])), "fold": 0})
    cohort.attrs["compared_methods"] = METHODS
    partitions = {
        f"{e}|{t}": rows.assign(msd=1.0, hd95=2.0, mean_hd95=1.5)
        for (t, e), rows in metrics.groupby(["train_defacer", "eval_defacer"])
    }
    config = StudyConfig(data_root=str(tmp_path), study_dir=str(tmp_path))
    return stats_tables(build_asset_context(), config, cohort, TABLE1, partitions)


def test_stats_tables_writes_tables_and_figures(tmp_path):
    output = _stats_tables(tmp_path, study_metrics())
    long = output.value
    assert set(long["table"]) >= {"table2", "experiment1_dice", "experiment2_msd"}
    stored_table1 = pd.read_csv(tmp_path / "tables" / "table1.csv", index_col=0)
    assert stored_table1.loc["Total", "pydeface"] == "8 (50%)"
    assert {f"{name}.png" for name in FIGURES} <= {p.name for p in (tmp_path / "figures").iterdir()}
    table2 = pd.read_csv(tmp_path / "tables" / "table2.csv", index_col=0)
    assert table2.loc["original", "original"].startswith("0.8")
    assert "LN_Neck_III_L" in output.metadata["experiment2_dice_dropped"].value


def test_stats_tables_names_failed_models_and_tests_nothing_with_them(tmp_path):
    output = _stats_tables(tmp_path, with_failed_model(study_metrics(), "pydeface"))
    assert output.metadata["failed_models"].value == {"pydeface": REASON}
    untested = output.value[output.value["symbol"] == "model failed"]
    assert len(untested) and untested["p"].isna().all()
    assert "failed_models" not in _stats_tables(tmp_path, study_metrics()).metadata
