"""stats_tables and study_report on a constructed study: every table and figure written,
comparisons in one table, and no render of an un-defaced scan in the report."""

import base64
import html
import io
import re
from functools import partial

import numpy as np
import pandas as pd
from dagster import MultiPartitionKey, build_asset_context
from PIL import Image

from defacing_assets.assets.reporting import stats_tables, study_report
from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.evaluation.report import example_renders
from defacing_assets.evaluation.results import FIGURES
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.render import montage_png
from defacing_assets.resources import StudyConfig
from defacing_assets.storage import LazyPartitions
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


def _head(defaced: bool = False) -> Volume:
    """A small smooth head with a nose (2 mm voxels, RAS); ``defaced``: its front removed."""
    shape = np.array([40, 48, 40])
    i, j, k = np.indices(shape) - (shape / 2)[:, None, None, None]
    head = (i / 16) ** 2 + (j / 20) ** 2 + (k / 17) ** 2 <= 1
    nose = (np.abs(i) <= 3) & (j >= 18) & (j <= 23) & (np.abs(k) <= 4)
    array = np.where(head | nose, 400.0, 0.0).astype(np.float32)
    if defaced:
        array[:, 32:, :] = 0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -shape
    return Volume(array, affine)


def _embedded_pngs(document: str) -> list[np.ndarray]:
    encoded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", document)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(e)))) for e in encoded]


def _defaced(image: Volume | None, command: str) -> DefacingResult:
    return DefacingResult(image, None, "ok", "", "tool", "1", command, 0.1)


def test_report_shows_no_render_of_the_original_scan(tmp_path):
    """The report is passed around: the original's render (the identity method's output)
    must not be in it, while the defaced scan's render is."""
    subject = "SYN001"
    original, defaced = _head(), _head(defaced=True)
    cohort = pd.DataFrame({"subject": [subject], "fold": [0]})
    cohort.attrs["compared_methods"] = METHODS
    metrics = study_metrics()
    partitions = {
        f"{e}|{t}": rows.assign(msd=1.0, hd95=2.0, mean_hd95=1.5)
        for (t, e), rows in metrics.groupby(["train_defacer", "eval_defacer"])
    }
    ratios = {
        "pydeface": pd.DataFrame(
            {
                "defacer": ["pydeface"],
                "oar": ["Glnd_Submand_L"],
                "voxels_before": [9],
                "ratio": [0.5],
            }
        )
    }
    outputs = {"original": _defaced(original, "identity"), "pydeface": _defaced(defaced, "x")}
    defaced_scans = LazyPartitions(
        {
            MultiPartitionKey({"subject": subject, "defacer": method}): partial(lambda r: r, result)
            for method, result in outputs.items()
        }
    )
    raw_scans = LazyPartitions({subject: lambda: Scan(subject, original, None, "MR")})
    (tmp_path / "data").mkdir()
    config = StudyConfig(data_root=str(tmp_path / "data"), study_dir=str(tmp_path))
    with build_asset_context() as context:
        study_report(
            context, config, cohort, TABLE1, {}, ratios, partitions, raw_scans, defaced_scans
        )
    document = (tmp_path / "report.html").read_text()
    shown = _embedded_pngs(document)
    original_render = np.asarray(Image.open(io.BytesIO(montage_png(original, "MR"))))
    defaced_render = np.asarray(Image.open(io.BytesIO(montage_png(defaced, "MR"))))
    assert not np.array_equal(original_render, defaced_render)
    assert not [p for p in shown if np.array_equal(p, original_render)], "original rendered"
    assert [p for p in shown if np.array_equal(p, defaced_render)], "defaced render missing"
    assert "defaced by original" not in document
    assert f"{subject}, original: no render shown" in html.unescape(document)


def test_example_renders_leave_out_every_output_that_shows_the_face():
    """Identity methods, outputs equal to the original and outputs where face QC still
    finds a face are not rendered; each is named with its reason."""
    original, defaced = _head(), _head(defaced=True)
    copy = Volume(original.array.copy(), original.affine)
    renders, withheld = example_renders(
        "S1",
        original,
        {"original": original, "noop": copy, "leaky": defaced, "good": defaced, "failed": None},
        "MR",
        unchanged_methods={"original"},
        face_found={"leaky": True, "good": False},
    )
    assert list(renders) == ["S1 defaced by good"]
    assert renders["S1 defaced by good"] == montage_png(defaced, "MR")
    assert withheld == [
        "S1, original: no render shown (its output is the un-defaced scan).",
        "S1, noop: no render shown (its output equals the un-defaced scan).",
        "S1, leaky: no render shown (face QC still finds a face on it).",
    ]
