"""The report's verdicts: what a data sharer reads about each defacer."""

import html

import numpy as np
import pandas as pd

from defacing_assets.evaluation.report import (
    ReportInputs,
    main_effects,
    original_model_on_defaced,
    qc_summary,
    render_html,
)
from defacing_assets.evaluation.results import study_results
from defacing_assets.evaluation.scores import failed_models
from defacing_assets_tests.builders import METHODS, OARS, SUBJECTS, study_metrics
from defacing_assets_tests.evaluation.failures import REASON, with_failed_model


def _with_hnc_safe(metrics: pd.DataFrame) -> pd.DataFrame:
    """hnc_safe scans score like original ones, up to noise that goes both ways."""
    rng = np.random.default_rng(1)
    on_original = metrics[metrics["eval_defacer"] == "original"]
    safe = on_original.assign(
        eval_defacer="hnc_safe", dice=on_original["dice"] + rng.normal(0, 0.01, len(on_original))
    )
    return pd.concat([metrics, safe], ignore_index=True)


def test_original_model_is_judged_on_each_method_against_original():
    shifts = original_model_on_defaced(_with_hnc_safe(study_metrics())).set_index("evaluated on")
    assert set(shifts.index) == {"pydeface", "hnc_safe"}
    assert shifts.loc["pydeface", "verdict"] == "significantly lower"
    assert shifts.loc["pydeface", "p_adjusted"] <= 0.05
    assert shifts.loc["hnc_safe", "verdict"] == "no significant difference"
    assert shifts.loc["hnc_safe", "p_adjusted"] > 0.05
    # Level III was erased by pydeface, so fewer matched cases there.
    assert shifts.loc["hnc_safe", "n"] == len(SUBJECTS) * len(OARS)
    assert shifts.loc["pydeface", "n"] == len(SUBJECTS) * (len(OARS) - 1)


def _gland_ratios() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject": ["S0", "S0"],
            "defacer": ["pydeface", "pydeface"],
            "oar": ["Glnd_Submand_L", "Glnd_Submand_R"],
            "voxels_before": [100, 100],
            "ratio": [0.8, 1.0],
        }
    )


def test_main_effects_name_hnc_safe_beside_pydeface():
    effects = main_effects(_gland_ratios(), _with_hnc_safe(study_metrics()))
    assert "shows the study's first effect" in effects[0]
    assert "shows the study's second effect" in effects[1]
    assert "hnc_safe" in effects[2] and "no significant difference" in effects[2]
    assert "(pydeface: significantly lower)" in effects[2]


def test_qc_summary_puts_privacy_beside_anatomy():
    qc = pd.DataFrame(
        {
            "subject": ["S0", "S1", "S0", "S1"],
            "defacer": ["pydeface", "pydeface", "quickshear", "quickshear"],
            "status": ["ok", "ok", "ok", "failed"],
            "passed": [True, True, False, False],
            "face_detected": [False, False, True, False],
            "views_with_face": ["", "", "frontal,oblique_left", ""],
            "identity_distance": [0.9, 0.7, 0.3, np.nan],
            "face_surface_kept": [0.1, 0.3, 0.9, np.nan],
            "face_depth_correlation": [0.2, 0.4, 0.99, np.nan],
        }
    )
    ratios = pd.DataFrame(
        {
            "defacer": ["pydeface", "pydeface", "quickshear"],
            "voxels_before": [100, 50, 100],
            "ratio": [0.5, 1.0, 1.0],
        }
    )
    summary = qc_summary(qc, ratios).set_index("defacer")
    assert summary.loc["pydeface", "QC passed"] == 2
    assert summary.loc["quickshear", "face in frontal"] == "100%"
    assert summary.loc["quickshear", "face in profile_left"] == "0%"
    assert summary.loc["pydeface", "facial surface kept"] == 0.2
    assert summary.loc["pydeface", "min OAR kept ratio"] == 0.5
    assert summary.loc["pydeface", "OARs fully kept"] == "50%"
    assert summary.loc["quickshear", "scans"] == 2


def test_report_without_the_original_model_says_the_second_effect_was_not_tested():
    metrics = with_failed_model(_with_hnc_safe(study_metrics()), "original").assign(
        msd=1.0, hd95=2.0, mean_hd95=1.5
    )
    effects = main_effects(_gland_ratios(), metrics)
    results = study_results(metrics, METHODS)
    document = render_html(
        ReportInputs(
            title="failed original model",
            settings={"profile": "demo"},
            cohort=pd.DataFrame({"subject": SUBJECTS}),
            qc_summary=pd.DataFrame(),
            original_model=original_model_on_defaced(metrics),
            renders={},
            table1=pd.DataFrame(),
            figure2=None,
            table2=results.table2,
            experiments=results.experiments,
            figures=results.figures,
            main_effects=effects,
            failed_models=failed_models(metrics),
        )
    )
    text = html.unescape(document)
    assert effects[1] == (
        "This run cannot test the study's second effect: the model trained on original failed "
        f"({REASON}), so it was not evaluated on original or pydeface-defaced scans."
    )
    assert "cannot test" in effects[2] and "hnc_safe" in effects[2]
    assert "Failed models" in text and f"trained on original: {REASON}" in text
    for claim in ("no significant difference", "show the study's second effect", "p = "):
        assert claim not in text
