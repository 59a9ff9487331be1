"""Shared fixtures: a tiny synthetic cohort written once per session."""

from __future__ import annotations

import os

import pytest

from defacing_assets.cohort.synthetic import write_cohort


def pytest_configure(config) -> None:
    """Under pytest-xdist the workers share the cores instead of each taking all of them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import SimpleITK as sitk
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // workers)
        torch.set_num_threads(threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


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
