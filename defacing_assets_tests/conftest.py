"""Shared fixtures: a tiny synthetic cohort written once per session."""

from __future__ import annotations

import pytest

from defacing_assets.cohort.synthetic import write_cohort


@pytest.fixture(scope="session")
def ci_cohort(tmp_path_factory):
    """Two `ci`-profile synthetic MR subjects in the NIfTI layout."""
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, n_subjects=2, seed=7, profile="ci")
    return root


def study_resources(data, study) -> dict:
    """Resources of a `ci` study reading ``data`` and storing under ``study/store``."""
    from defacing_assets.resources import ComputeConfig, StudyConfig
    from defacing_assets.storage import (
        DefacedScanStore,
        ModelStore,
        PredictionStore,
        ScanStore,
        TableStore,
    )

    store = str(study / "store")
    return {
        "study": StudyConfig(data_root=str(data), study_dir=str(study), profile="ci"),
        "scan_io_manager": ScanStore(base_path=store),
        "defaced_io_manager": DefacedScanStore(base_path=store),
        "io_manager": TableStore(base_path=store),
        "model_io_manager": ModelStore(base_path=store),
        "prediction_io_manager": PredictionStore(base_path=store),
        "compute": ComputeConfig(scratch_dir=str(study / "scratch")),
    }
