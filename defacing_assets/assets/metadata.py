"""Shared metadata helpers for asset bodies."""

from __future__ import annotations

import base64

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, MetadataValue


def png_metadata(png: bytes, caption: str) -> MetadataValue:
    """An inline image the Dagster UI shows in the materialization's metadata."""
    encoded = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")


def latest_metadata(instance: DagsterInstance, key: AssetKey, partition: str | None) -> dict:
    """Metadata values of the latest materialization of ``key`` (one partition or none)."""
    partitions = [partition] if partition is not None else None
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()}
