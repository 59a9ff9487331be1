"""Every asset of the study in dependency order: one list for Definitions, demo and tests."""

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.inference import predictions, segmentation_metrics
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.assets.reporting import stats_tables, study_report
from defacing_assets.assets.training import unet_models

STUDY_ASSETS = [
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
]
