"""Running the asset graph from the command line (``defacing-assets demo``).

Uses the instance under ``DAGSTER_HOME``, so what the demo materializes is
what ``dagster dev`` shows, and a second run reuses it.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from defacing_assets.assets.ingest import raw_scans
from defacing_assets.partitions import subjects_partitions
from defacing_assets.resources import study_resources
from defacing_assets.sensors import new_valid_subjects

_log = logging.getLogger("defacing_assets")
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _latest_metadata(instance: DagsterInstance, key: AssetKey, partition: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()}


def materialize_raw_scans(print_progress: bool = False) -> pd.DataFrame:
    """Add the data folder's valid subjects and materialize the missing raw_scans."""
    instance = DagsterInstance.get()
    resources = study_resources()
    existing = set(instance.get_dynamic_partitions(subjects_partitions.name))
    new = new_valid_subjects(resources["study"], existing, _log)
    if new:
        instance.add_dynamic_partitions(subjects_partitions.name, new)
    subjects = sorted(instance.get_dynamic_partitions(subjects_partitions.name))
    key = AssetKey("raw_scans")
    done = instance.get_materialized_partitions(key)
    missing = [s for s in subjects if s not in done]
    started = time.monotonic()
    for count, subject in enumerate(missing, start=1):
        result = materialize(
            [raw_scans],
            partition_key=subject,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            run_config=_QUIET,
        )
        if print_progress:
            status = "ok" if result.success else "FAILED"
            elapsed = time.monotonic() - started
            print(
                f"raw_scans {count}/{len(missing)} {subject} {status} ({elapsed:.0f}s)", flush=True
            )
    rows = []
    for subject in subjects:
        metadata = _latest_metadata(instance, key, subject)
        voxels = metadata.get("voxels_per_oar", {})
        rows.append(
            {
                "subject": subject,
                "modality": metadata.get("modality", "?"),
                "shape": metadata.get("shape", "not materialized"),
                "spacing_mm": metadata.get("spacing_mm", ""),
                "OARs present": sum(1 for n in voxels.values() if n),
            }
        )
    return pd.DataFrame(rows)
