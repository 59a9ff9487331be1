"""How summary assets read partitioned tables."""

import pandas as pd
from dagster import AssetIn

PRESENT_PARTITIONS = AssetIn(metadata={"allow_missing_partitions": True})
"""Summaries use what is stored; a partition not computed yet is skipped with a warning."""


def concat_partitions(partitions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All partitions of a table in one frame (empty partitions dropped)."""
    frames = [frame for frame in partitions.values() if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
