"""The one Definitions object: wiring only."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

from defacing_assets.assets.ingest import raw_scans
from defacing_assets.resources import study_resources
from defacing_assets.sensors import subject_discovery_sensor

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = Definitions(
    assets=[raw_scans],
    sensors=[subject_discovery_sensor, automation_sensor],
    resources=study_resources(),
)
