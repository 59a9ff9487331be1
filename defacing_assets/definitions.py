"""The one Definitions object: wiring only."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

from defacing_assets.assets.graph import STUDY_ASSETS
from defacing_assets.checks import stored_files_checks
from defacing_assets.execution import default_executor
from defacing_assets.resources import study_resources
from defacing_assets.schedules import NIGHTLY_SCHEDULES
from defacing_assets.sensors import defacer_registry_sensor, subject_discovery_sensor

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = Definitions(
    assets=STUDY_ASSETS,
    asset_checks=stored_files_checks(STUDY_ASSETS),
    sensors=[subject_discovery_sensor, defacer_registry_sensor, automation_sensor],
    schedules=NIGHTLY_SCHEDULES,
    resources=study_resources(),
    executor=default_executor(),
)
