"""The modelling cohort: subjects every compared method defaced successfully, and their folds.

As in the study, methods that never passed QC are not compared (they would
empty the intersection), ``original`` is always compared and needs no QC, and
folds are a seeded function of the usable cohort: fold i tests, fold i+1 mod k
validates, the rest train, identically for every training set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINE = "original"


def compared_methods(qc: pd.DataFrame, requested: list[str] | None = None) -> list[str]:
    """``requested`` if given, else every method with at least one QC pass (plus original)."""
    methods = sorted(set(qc["defacer"]))
    if requested:
        unknown = sorted(set(requested) - set(methods))
        if unknown:
            raise ValueError(f"compared methods {unknown} have no QC results; known: {methods}")
        chosen = set(requested)
    else:
        passed = qc[qc["passed"]].groupby("defacer").size()
        chosen = {m for m in methods if passed.get(m, 0) > 0}
    chosen.add(BASELINE)
    return sorted(chosen & (set(methods) | {BASELINE}))


def assign_folds(subjects: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Seeded, balanced (sizes differ by at most one) fold of each subject."""
    order = np.random.default_rng(seed).permutation(sorted(subjects))
    return {str(subject): index % n_folds for index, subject in enumerate(order)}


def fold_roles(fold: int, n_folds: int) -> dict[str, list[int]]:
    """Which folds test, validate and train in cross-validation iteration ``fold``."""
    validation = (fold + 1) % n_folds
    return {
        "test": [fold],
        "validation": [validation],
        "train": [f for f in range(n_folds) if f not in (fold, validation)],
    }


def select_cohort(
    qc: pd.DataFrame,
    labelled_subjects: list[str],
    methods: list[str] | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Usable subjects with folds, the excluded ones with reasons, and the compared methods.

    Args:
        qc: one row per (subject, defacer) with a boolean ``passed``.
        labelled_subjects: subjects with OAR labels (others cannot train a model).
    """
    compared = compared_methods(qc, methods)
    excluded, usable = [], []
    for subject in sorted(set(qc["subject"])):
        if subject not in labelled_subjects:
            excluded.append({"subject": subject, "reason": "no OAR labels"})
            continue
        rows = qc[qc["subject"] == subject].set_index("defacer")
        reasons = []
        for method in compared:
            if method == BASELINE:
                continue
            if method not in rows.index:
                reasons.append(f"{method}: no QC result")
            elif not bool(rows.loc[method, "passed"]):
                reasons.append(f"{method}: QC failed")
        if reasons:
            excluded.append({"subject": subject, "reason": "; ".join(reasons)})
        else:
            usable.append(subject)
    folds = assign_folds(usable, n_folds, seed)
    cohort = pd.DataFrame({"subject": usable, "fold": [folds[s] for s in usable]})
    return cohort, pd.DataFrame(excluded, columns=["subject", "reason"]), compared
