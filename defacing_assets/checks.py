"""Asset checks: post-conditions a person would otherwise verify by eye."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    PartitionsDefinition,
    asset_check,
)

from defacing_assets.cohort.scan import Scan
from defacing_assets.imaging.validation import image_problems, label_problems
from defacing_assets.storage import missing_stored_files

RAW_SCAN_CHECKS = [
    AssetCheckSpec(
        "geometry_consistent",
        asset="raw_scans",
        description="image valid; label map on the image grid with values 0..8",
    ),
    AssetCheckSpec(
        "labels_present",
        asset="raw_scans",
        description="every OAR present (warns for absent ones; unlabelled CT passes)",
    ),
]


def raw_scan_check_results(scan: Scan) -> list[AssetCheckResult]:
    problems = image_problems(scan.image)
    if scan.labels is not None:
        problems += label_problems(scan.labels, scan.image)
    geometry = AssetCheckResult(
        check_name="geometry_consistent",
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none", "orientation": scan.image.orientation},
    )
    if scan.labels is None:
        labels = AssetCheckResult(
            check_name="labels_present",
            passed=True,
            metadata={"note": "unlabelled scan: used for defacing and QC only"},
        )
    else:
        labels = AssetCheckResult(
            check_name="labels_present",
            passed=not scan.absent_structures,
            severity=AssetCheckSeverity.WARN,
            metadata={"absent": ", ".join(scan.absent_structures) or "none"},
        )
    return [geometry, labels]


STORED_FILES = "stored_files"
MISSING_SHOWN = 20
"""Partitions listed in a failed ``stored_files`` result (the count is always complete)."""


def _stored_files_check(
    key: AssetKey, definition: PartitionsDefinition, manager_key: str
) -> AssetChecksDefinition:
    @asset_check(
        asset=key,
        name=STORED_FILES,
        description="every partition Dagster records as materialized has its files in storage "
        "(a wiped or half-restored store otherwise reads as done and is never recomputed)",
        required_resource_keys={manager_key},
    )
    def stored_files(context) -> AssetCheckResult:  # no annotation: a string to Dagster here
        manager = getattr(context.resources, manager_key)
        materialized = sorted(context.instance.get_materialized_partitions(key))
        missing: dict[str, list[str]] = {}
        for partition in materialized:
            files = missing_stored_files(manager, key, definition, partition)
            if files is None:
                return AssetCheckResult(
                    passed=True,
                    severity=AssetCheckSeverity.WARN,
                    metadata={"note": f"{manager_key} is not a file store: nothing checked"},
                )
            if files:
                missing[partition] = [str(file) for file in files]
        shown = dict(list(missing.items())[:MISSING_SHOWN])
        return AssetCheckResult(
            passed=not missing,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "partitions_checked": len(materialized),
                "partitions_missing": len(missing),
                "missing": MetadataValue.json(shown),
                "remedy": "none needed"
                if not missing
                else "re-materialize the listed partitions (they read as done but are not stored)",
            },
        )

    return stored_files


def stored_files_checks(assets: Sequence[AssetsDefinition]) -> list[AssetChecksDefinition]:
    """One ``stored_files`` check per partitioned asset stored by an IO manager: Dagster
    records a partition as materialized forever, so a store that lost it (a wiped folder,
    a restore from an older backup) would otherwise never be recomputed."""
    checks = []
    for asset in assets:
        if asset.partitions_def is None:
            continue
        for key in asset.keys:
            manager_key = asset.get_io_manager_key_for_asset_key(key)
            checks.append(_stored_files_check(key, asset.partitions_def, manager_key))
    return checks
