"""Rank-1 re-identification against the gallery of originals."""

import json

import numpy as np
import pandas as pd
import pytest

from defacing_assets.evaluation.reidentification import rank1_reidentification
from defacing_assets.evaluation.report import qc_summary

SUBJECTS = [f"S{i}" for i in range(8)]


def _rows(method: str, descriptors: list[np.ndarray | None], status: str = "ok") -> list[dict]:
    return [
        {
            "subject": subject,
            "defacer": method,
            "status": status,
            "face_descriptor": None if d is None else json.dumps(d.round(6).tolist()),
        }
        for subject, d in zip(SUBJECTS, descriptors, strict=True)
    ]


@pytest.fixture
def gallery() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.normal(0, 0.1, 128) for _ in SUBJECTS]


def test_rates_count_probes_matched_to_their_own_original(gallery) -> None:
    rng = np.random.default_rng(4)
    kept_face = [d + rng.normal(0, 0.01, 128) for d in gallery]
    swapped = gallery[1:] + gallery[:1]  # every probe looks like the next subject
    half_gone = [d if i % 2 else -d for i, d in enumerate(gallery)]  # -d: farthest from d
    qc = pd.DataFrame(
        _rows("original", gallery)
        + _rows("noisy", kept_face)
        + _rows("swapped", swapped)
        + _rows("half", half_gone)
    )
    rates = rank1_reidentification(qc).set_index("defacer")
    assert rates.loc["original", "rate"] == 1.0
    assert rates.loc["noisy", "reidentified"] == 8
    assert rates.loc["swapped", "reidentified"] == 0
    assert rates.loc["half", "reidentified"] == 4
    assert (rates["chance"] == 1 / 8).all()
    assert (rates["probes"] == 8).all()


def test_subjects_without_a_described_face_or_a_failed_run_are_not_probes(gallery) -> None:
    no_face = [None] * 3 + gallery[3:]
    qc = pd.DataFrame(
        _rows("original", gallery) + _rows("partial", no_face) + _rows("broken", gallery, "failed")
    )
    rates = rank1_reidentification(qc).set_index("defacer")
    assert rates.loc["partial", "probes"] == 5 and rates.loc["partial", "rate"] == 1.0
    assert "broken" not in rates.index


def test_without_originals_there_is_no_gallery(gallery) -> None:
    assert rank1_reidentification(pd.DataFrame(_rows("pydeface", gallery))).empty
    assert rank1_reidentification(pd.DataFrame()).empty


def test_qc_summary_shows_the_rate_beside_chance(gallery) -> None:
    qc = pd.DataFrame(_rows("original", gallery) + _rows("swapped", gallery[1:] + gallery[:1]))
    for column, value in (
        ("passed", False),
        ("face_detected", False),
        ("views_with_face", ""),
        ("identity_distance", 0.5),
    ):
        qc[column] = value
    ratios = pd.DataFrame({"defacer": ["swapped"], "voxels_before": [10], "ratio": [1.0]})
    summary = qc_summary(qc, ratios).set_index("defacer")
    assert summary.loc["original", "re-identified (rank 1)"] == "8/8 = 100% (chance 12%)"
    assert summary.loc["swapped", "re-identified (rank 1)"] == "0/8 = 0% (chance 12%)"
