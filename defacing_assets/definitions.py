"""The one Definitions object: wiring only."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.inference import predictions, segmentation_metrics
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.assets.reporting import stats_tables, study_report
from defacing_assets.assets.training import unet_models
from defacing_assets.execution import default_executor
from defacing_assets.resources import study_resources
from defacing_assets.schedules import nightly_defacing_retry
from defacing_assets.sensors import defacer_registry_sensor, subject_discovery_sensor

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = Definitions(
    assets=[
        raw_scans,
        defaced_scans,
        qc_labels,
        voxel_ratios,
        study_cohort,
        voxel_loss,
        unet_models,
        predictions,
        segmentation_metrics,
        stats_tables,
        study_report,
    ],
    sensors=[subject_discovery_sensor, defacer_registry_sensor, automation_sensor],
    schedules=[nightly_defacing_retry],
    resources=study_resources(),
    executor=default_executor(),
)
