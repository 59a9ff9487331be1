"""The study report: one self-contained HTML file a person can open or send.

Everything is embedded (figures as base64 PNG), so the file needs no server
and no other files. The published Table 2 (STUDY.md) is printed beside this
run's for comparison, and the main effects of the study are stated plainly
with this run's numbers.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from defacing_assets.evaluation.stats import compare_pairs
from defacing_assets.evaluation.tables import BASELINE, CASE, ExperimentTable, Table2

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


@dataclass
class ReportInputs:
    title: str
    settings: dict[str, str]
    """Profile, seed, reference policy, compared methods."""
    cohort: pd.DataFrame
    """Usable subjects and folds."""
    qc_counts: pd.DataFrame
    renders: dict[str, bytes]
    """Caption -> PNG montage of example renders."""
    table1: pd.DataFrame
    figure2: bytes | None
    table2: Table2
    experiments: dict[str, ExperimentTable]
    figures: dict[str, bytes]
    main_effects: list[str]
    provenance: dict[str, object] = field(default_factory=dict)


def main_effects(voxel_ratios: pd.DataFrame, metrics: pd.DataFrame) -> list[str]:
    """The study's two headline findings, checked on this run, as sentences with numbers.

    1. Defacing with pydeface loses submandibular voxels.
    2. A model trained on original scores lower on pydeface-defaced scans than on
       original ones (paired Wilcoxon on (subject, OAR) Dice, BH-corrected).
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
    trained_on_original = metrics[metrics["train_defacer"] == BASELINE]
    if PYDEFACE not in set(trained_on_original["eval_defacer"]):
        findings.append(
            "Model trained on original, evaluated on pydeface: not assessed "
            "(pydeface is not among the compared methods of this run)."
        )
        return findings
    test = compare_pairs(
        trained_on_original,
        group_column="eval_defacer",
        value_column="dice",
        pair_on=CASE,
        comparisons=[(BASELINE, PYDEFACE)],
    ).iloc[0]
    lower = test["mean_b"] < test["mean_a"]
    significant = bool(np.isfinite(test["p_adjusted"]) and test["p_adjusted"] <= 0.05)
    shown = "shows" if lower and significant else "does not show"
    findings.append(
        f"This run {shown} the study's second effect: the model trained on original scores "
        f"a composite Dice of {test['mean_a']:.3f} on original and {test['mean_b']:.3f} on "
        f"pydeface-defaced scans over {int(test['n'])} matched (subject, OAR) cases, "
        f"adjusted p = {test['p_adjusted']:.2g} ({test['symbol']})."
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
        "<h2>Main effects</h2><ul class='effects'>",
        *[f"<li>{html.escape(line)}</li>" for line in inputs.main_effects],
        "</ul><h2>Settings</h2>",
        _table(pd.Series(inputs.settings, name="value").to_frame()),
        "<h2>Cohort and face QC</h2>",
        f"<p>{len(inputs.cohort)} usable subjects.</p>",
        _table(inputs.qc_counts, index=False),
        *[_image(png, caption) for caption, png in inputs.renders.items()],
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
