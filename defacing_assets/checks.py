"""Asset checks: post-conditions a person would otherwise verify by eye."""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from defacing_assets.cohort.scan import Scan
from defacing_assets.imaging.validation import image_problems, label_problems

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
