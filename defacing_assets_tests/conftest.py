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
