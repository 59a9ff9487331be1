"""The study report: one self-contained HTML file a person can open or send.

Everything is embedded (figures as base64 PNG), so the file needs no server
and no other files. The published Table 2 (STUDY.md) is printed beside this
run's for comparison, and the main effects of the study are stated plainly
with this run's numbers.

The file is passed around, so it shows no face: the example renders are of
defaced scans only (:func:`example_renders`), never of the original scan.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from defacing_assets.evaluation.reidentification import rank1_reidentification, rate_text
from defacing_assets.evaluation.scores import failed_models
from defacing_assets.evaluation.tables import (
    BASELINE,
    ExperimentTable,
    Table2,
    compare_unless_failed,
)
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.render import VIEWS, montage_png

PUBLISHED_TABLE2 = pd.DataFrame(
    {
        "original (N=232)": ["0.760 (0.112)", "0.742 (0.115)", "0.736 (0.108)", "0.449 (0.333)"],
        "mask_face (N=232)": ["0.673 (0.181)", "0.733 (0.120)", "0.643 (0.185)", "0.417 (0.325)"],
        "fsl_deface (N=231)": ["0.693 (0.140)", "0.668 (0.143)", "0.733 (0.122)", "0.395 (0.301)"],
        "pydeface (N=169)": ["0.406 (0.304)", "0.413 (0.312)", "0.465 (0.293)", "0.653 (0.258)"],
    },
    index=pd.Index(["original", "mask_face", "fsl_deface", "pydeface"], name="trained on"),
)
"""Sahlsten et al. 2023, Table 2: composite Dice, mean (SD), as given in STUDY.md."""

SUBMANDIBULAR = ("Glnd_Submand_L", "Glnd_Submand_R")
PYDEFACE = "pydeface"
HNC_SAFE = "hnc_safe"


@dataclass
class ReportInputs:
    title: str
    settings: dict[str, str]
    """Profile, seed, reference policy, compared methods."""
    cohort: pd.DataFrame
    """Usable subjects and folds."""
    qc_summary: pd.DataFrame
    """:func:`qc_summary`."""
    original_model: pd.DataFrame
    """:func:`original_model_on_defaced`."""
    renders: dict[str, bytes]
    """Caption -> PNG montage of example renders: defaced scans only (:func:`example_renders`)."""
    table1: pd.DataFrame
    figure2: bytes | None
    table2: Table2
    experiments: dict[str, ExperimentTable]
    figures: dict[str, bytes]
    main_effects: list[str]
    provenance: dict[str, object] = field(default_factory=dict)
    failed_models: dict[str, str] = field(default_factory=dict)
    """:func:`~defacing_assets.evaluation.scores.failed_models`: training method -> reason."""
    withheld_renders: list[str] = field(default_factory=list)
    """Why a method's example render is not in the report (:func:`example_renders`)."""


def example_renders(
    subject: str,
    original: Volume,
    outputs: Mapping[str, Volume | None],
    modality: str,
    unchanged_methods: Collection[str] = (BASELINE,),
    face_found: Mapping[str, bool] | None = None,
) -> tuple[dict[str, bytes], list[str]]:
    """Renders of ``subject``'s defaced scans for the report, and why others are left out.

    The report is the file people send around, so no render in it may show the
    subject's face. Left out: the identity methods (``unchanged_methods``: their
    "defaced" scan is the original), any output whose voxels equal the original's
    (a method that changed nothing), and any output on which face QC still found a
    face (``face_found``: method -> bool). The original itself is never rendered.
    Returns caption -> PNG montage, and one sentence per method left out.
    """
    face_found = face_found or {}
    renders: dict[str, bytes] = {}
    withheld: list[str] = []
    for method, image in outputs.items():
        if image is None:
            continue
        if method in unchanged_methods:
            reason = "its output is the un-defaced scan"
        elif image.shape == original.shape and np.array_equal(image.array, original.array):
            reason = "its output equals the un-defaced scan"
        elif face_found.get(method, False):
            reason = "face QC still finds a face on it"
        else:
            renders[f"{subject} defaced by {method}"] = montage_png(image, modality)
            continue
        withheld.append(f"{subject}, {method}: no render shown ({reason}).")
    return renders, withheld


def original_model_on_defaced(metrics: pd.DataFrame) -> pd.DataFrame:
    """The model trained on original, scored on each method's scans against original scans.

    One row per evaluation method: paired Wilcoxon on (subject, OAR) Dice, one
    Benjamini-Hochberg correction over all methods, and a verdict in words. This is
    the question a data sharer asks: does my defacer change what a model finds? When
    that model failed, every row says so and nothing is tested.
    """
    trained_on_original = metrics[metrics["train_defacer"] == BASELINE]
    methods = sorted(set(trained_on_original["eval_defacer"]) - {BASELINE})
    if BASELINE not in set(trained_on_original["eval_defacer"]) or not methods:
        return pd.DataFrame()
    failure = failed_models(metrics).get(BASELINE)
    comparisons = [(BASELINE, method) for method in methods]
    tests = compare_unless_failed(
        trained_on_original,
        group_column="eval_defacer",
        value_column="dice",
        comparisons=comparisons,
        untested=comparisons if failure is not None else [],
    )
    if failure is not None:
        tests["verdict"] = f"not tested: the model trained on original failed ({failure})"
    else:
        significant = np.isfinite(tests["p_adjusted"]) & (tests["p_adjusted"] <= 0.05)
        tests["verdict"] = np.where(
            significant,
            np.where(
                tests["mean_b"] < tests["mean_a"], "significantly lower", "significantly higher"
            ),
            "no significant difference",
        )
    return tests.rename(
        columns={"group_b": "evaluated on", "mean_a": "dice on original", "mean_b": "dice on it"}
    ).drop(columns=["group_a"])


def qc_summary(qc: pd.DataFrame, voxel_ratios: pd.DataFrame) -> pd.DataFrame:
    """Per method: QC passes, face detections per view, identity distance, rank-1
    re-identification, facial surface kept, and the smallest OAR kept-voxel ratio: privacy
    and anatomy side by side."""
    if qc.empty:
        return pd.DataFrame()
    ok = qc[qc["status"] == "ok"]
    reidentified = rank1_reidentification(qc).set_index("defacer")
    rows = []
    for method, group in qc.groupby("defacer"):
        done = ok[ok["defacer"] == method]
        seen = done["views_with_face"].fillna("").str.split(",")
        row = {
            "defacer": method,
            "scans": len(group),
            "QC passed": int(group["passed"].sum()),
            "face detected (any view)": f"{done['face_detected'].mean():.0%}" if len(done) else "-",
            **{
                f"face in {view}": f"{seen.apply(lambda names, v=view: v in names).mean():.0%}"
                if len(done)
                else "-"
                for view in VIEWS
            },
            "identity distance": done["identity_distance"].mean(),
            "re-identified (rank 1)": rate_text(reidentified, method),
        }
        for column, name in (
            ("face_surface_kept", "facial surface kept"),
            ("face_depth_correlation", "depth-map correlation"),
        ):
            row[name] = done[column].mean() if column in done else np.nan
        ratios = voxel_ratios[
            (voxel_ratios["defacer"] == method) & (voxel_ratios["voxels_before"] > 0)
        ]
        row["min OAR kept ratio"] = ratios["ratio"].min() if len(ratios) else np.nan
        row["OARs fully kept"] = f"{(ratios['ratio'] == 1.0).mean():.0%}" if len(ratios) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def main_effects(voxel_ratios: pd.DataFrame, metrics: pd.DataFrame) -> list[str]:
    """The study's two headline findings, checked on this run, as sentences with numbers.

    1. Defacing with pydeface loses submandibular voxels.
    2. A model trained on original scores lower on pydeface-defaced scans than on
       original ones (paired Wilcoxon on (subject, OAR) Dice, BH-corrected). If that
       model failed, the run says it cannot test this, and why.
    """
    findings = []
    glands = voxel_ratios[
        (voxel_ratios["defacer"] == PYDEFACE)
        & voxel_ratios["oar"].isin(SUBMANDIBULAR)
        & (voxel_ratios["voxels_before"] > 0)
    ]
    if glands.empty:
        findings.append("pydeface submandibular loss: not assessed (no pydeface voxel ratios).")
    else:
        kept = float(glands["ratio"].mean())
        losing = int((glands["ratio"] < 1).sum())
        shown = "shows" if losing else "does not show"
        findings.append(
            f"This run {shown} the study's first effect: pydeface kept on average "
            f"{kept:.1%} of submandibular gland voxels; {losing} of {len(glands)} glands "
            "lost voxels."
        )
    shifts = original_model_on_defaced(metrics)
    tested = set(shifts["evaluated on"]) if len(shifts) else set()
    if PYDEFACE not in tested:
        findings.append(
            "Model trained on original, evaluated on pydeface: not assessed "
            "(pydeface is not among the compared methods of this run)."
        )
        return findings
    failure = failed_models(metrics).get(BASELINE)
    if failure is not None:
        findings.append(
            "This run cannot test the study's second effect: the model trained on original "
            f"failed ({failure}), so it was not evaluated on original or pydeface-defaced scans."
        )
        if HNC_SAFE in tested:
            findings.append(
                "hnc_safe: this run cannot test whether the model trained on original scores "
                "differently on hnc_safe-defaced scans: that model failed."
            )
        return findings
    test = shifts.set_index("evaluated on").loc[PYDEFACE]
    shown = "shows" if test["verdict"] == "significantly lower" else "does not show"
    findings.append(
        f"This run {shown} the study's second effect: the model trained on original scores "
        f"a composite Dice of {test['dice on original']:.3f} on original and "
        f"{test['dice on it']:.3f} on pydeface-defaced scans over {int(test['n'])} matched "
        f"(subject, OAR) cases, adjusted p = {test['p_adjusted']:.2g} ({test['symbol']})."
    )
    if HNC_SAFE in tested:
        safe = shifts.set_index("evaluated on").loc[HNC_SAFE]
        findings.append(
            f"hnc_safe: the same model scores {safe['dice on it']:.3f} on hnc_safe-defaced "
            f"scans against {safe['dice on original']:.3f} on original over {int(safe['n'])} "
            f"matched cases, adjusted p = {safe['p_adjusted']:.2g}: {safe['verdict']} "
            f"(pydeface: {test['verdict']})."
        )
    return findings


def _image(png: bytes, caption: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(index=index, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0)


def _failed_models(failed: dict[str, str]) -> str:
    """A boxed section first in the report, so no table below is read as a result of a
    model that failed; nothing when every model stands."""
    if not failed:
        return ""
    items = "".join(
        f"<li>trained on {html.escape(method)}: {html.escape(reason)}</li>"
        for method, reason in failed.items()
    )
    return (
        "<div style='border:2px solid #b00;padding:0 1em;margin:1em 0'>"
        "<h2>Failed models</h2><p>The models of these training methods failed the quality "
        "gate (non-finite training history, or validation Dice under the floor) and were not "
        "used: their cells in Table 2 say so, the comparisons that need them carry no "
        "p-value, and no mean over their other folds stands in for them.</p>"
        f"<ul>{items}</ul></div>"
    )


def render_html(inputs: ReportInputs) -> str:
    """The whole report as one HTML document."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(inputs.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:0.5em 0;font-size:0.85em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "img{max-width:100%}figure{margin:1em 0}.effects li{margin:0.4em 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(inputs.title)}</h1>",
        _failed_models(inputs.failed_models),
        "<h2>Main effects</h2><ul class='effects'>",
        *[f"<li>{html.escape(line)}</li>" for line in inputs.main_effects],
        "</ul><h2>Settings</h2>",
        _table(pd.Series(inputs.settings, name="value").to_frame()),
        "<h2>Cohort and face QC</h2>",
        f"<p>{len(inputs.cohort)} usable subjects. Per method: QC passes, how often a face "
        "detector still finds a face in each render view, the identity distance to the "
        "original face, how many defaced frontal renders a face-recognition embedding matches "
        "back to their own subject among all originals (rank 1), how much of the original "
        "frontal facial surface is still in place (within 1.5 mm) and the correlation of the "
        "frontal depth maps, beside the smallest kept-voxel ratio of any OAR.</p>",
        _table(inputs.qc_summary, index=False),
        *[_image(png, caption) for caption, png in inputs.renders.items()],
        *[f"<p>{html.escape(line)}</p>" for line in inputs.withheld_renders],
        "<h2>Table 1: OARs completely removed after successful defacing</h2>",
        _table(inputs.table1),
    ]
    if inputs.figure2 is not None:
        parts.append(_image(inputs.figure2, "Figure 2: kept-voxel ratio per OAR"))
    parts += [
        "<h2>Table 2: composite Dice, mean (SD)</h2><h3>This run</h3>",
        _table(inputs.table2.cells),
        "<p>Number of (subject, OAR) values per cell:</p>",
        _table(inputs.table2.n),
        "<p>Training methods compared within each evaluation column "
        "(paired Wilcoxon, Benjamini-Hochberg over all):</p>",
        _table(inputs.table2.significance, index=False),
        "<h3>The model trained on original, on each method's scans</h3>"
        "<p>Composite Dice on the method's scans against the same cases on original scans "
        "(paired Wilcoxon, Benjamini-Hochberg over the methods):</p>",
        _table(inputs.original_model, index=False),
        "<h3>Published (Sahlsten et al. 2023)</h3>",
        _table(PUBLISHED_TABLE2),
        "<h2>Per-OAR results</h2>",
    ]
    for name, experiment in inputs.experiments.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_table(experiment.comparisons, index=False))
        for oar, reason in experiment.dropped.items():
            parts.append(f"<p>Dropped {html.escape(oar)}: {html.escape(reason)}.</p>")
    parts += [_image(png, caption) for caption, png in inputs.figures.items()]
    parts += ["<h2>Provenance</h2>", "<pre>"]
    parts += [html.escape(f"{key}: {value}") + "\n" for key, value in inputs.provenance.items()]
    parts += ["</pre></body></html>"]
    return "".join(parts)
