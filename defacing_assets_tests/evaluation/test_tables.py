"""Table 2 and the per-OAR experiment tables on a constructed study."""

import io

import pandas as pd
import pytest
from PIL import Image

from defacing_assets.evaluation.plots import oar_bars
from defacing_assets.evaluation.tables import experiment_table, table2
from defacing_assets_tests.builders import METHODS, OARS, SUBJECTS, study_metrics
from defacing_assets_tests.evaluation.failures import REASON, with_failed_model


@pytest.fixture
def metrics() -> pd.DataFrame:
    return study_metrics()


def test_table2_cells_counts_and_column_significance(metrics):
    table = table2(metrics, METHODS)
    assert table.n.loc["original", "original"] == len(SUBJECTS) * len(OARS)
    assert table.n.loc["original", "pydeface"] == len(SUBJECTS) * (len(OARS) - 1)
    mean, sd = table.cells.loc["original", "pydeface"].replace("(", "").rstrip(")").split()
    assert float(mean) == pytest.approx(0.5, abs=0.01) and float(sd) < 0.02
    assert list(table.significance["eval_defacer"]) == METHODS
    assert (table.significance["n"] == [24, 16]).all()


def test_experiment_two_keeps_cases_available_for_every_method(metrics):
    table = experiment_table(metrics, "dice", experiment=2, methods=METHODS)
    assert set(table.comparisons["oar"]) == {"Glnd_Submand_L", "Parotid_L"}
    assert "LN_Neck_III_L" in table.dropped
    assert (table.comparisons["n"] == len(SUBJECTS)).all()
    assert (table.comparisons["symbol"] != "ns").all(), "0.8 vs 0.5 in 8 of 8 pairs"
    assert table.summary.loc["Parotid_L", ("mean", "original")] == pytest.approx(0.8, abs=0.02)


def test_experiment_one_compares_training_sets_on_original_images(metrics):
    table = experiment_table(metrics, "dice", experiment=1, methods=METHODS)
    assert set(table.comparisons["oar"]) == set(OARS)
    assert (table.comparisons["group_a"] == "original").all()
    assert (table.comparisons["group_b"] == "pydeface").all()


def test_oar_with_too_few_cases_is_dropped_and_says_why(metrics):
    few = metrics[~((metrics["oar"] == "Parotid_L") & metrics["subject"].isin(SUBJECTS[3:]))]
    table = experiment_table(few, "dice", experiment=1, methods=METHODS, min_cases=5)
    assert table.dropped == {"Parotid_L": "3 case(s), fewer than 5"}
    assert "Parotid_L" not in set(table.comparisons["oar"])


def test_per_oar_figure_renders_with_dropped_oars_noted(metrics):
    table = experiment_table(metrics, "dice", experiment=2, methods=METHODS)
    png = oar_bars(table, "Dice", "Experiment 2")
    assert png.startswith(b"\x89PNG")
    width, height = Image.open(io.BytesIO(png)).size
    assert width >= 600 and height == 400


def test_table2_says_model_failed_and_tests_no_pair_with_it(metrics):
    table = table2(with_failed_model(metrics, "pydeface"), METHODS)
    assert (table.cells.loc["pydeface"] == f"model failed ({REASON})").all()
    assert (table.n.loc["pydeface"] == 0).all()
    assert table.n.loc["original", "original"] == len(SUBJECTS) * len(OARS)
    assert list(table.significance["eval_defacer"]) == METHODS
    assert (table.significance["symbol"] == "model failed").all()
    assert table.significance[["p", "p_adjusted"]].isna().all().all()


def test_experiment_two_without_the_original_model_tests_nothing_and_says_why(metrics):
    table = experiment_table(with_failed_model(metrics, "original"), "dice", 2, METHODS)
    assert set(table.comparisons["oar"]) == set(OARS)
    assert (table.comparisons["symbol"] == "model failed").all()
    assert table.comparisons["p"].isna().all()
    assert table.dropped == {"model trained on original": f"model failed: {REASON}"}
    assert oar_bars(table, "Dice", "Experiment 2").startswith(b"\x89PNG")
