"""defaced_scans: every subject through every available defacer."""

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AutomationCondition,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    Output,
    asset,
)

from defacing_assets.assets.metadata import png_metadata
from defacing_assets.cohort.scan import Scan
from defacing_assets.imaging.thumbnail import before_after_thumbnail
from defacing_assets.partitions import subject_defacer_partitions
from defacing_assets.resources import StudyConfig


@asset(
    partitions_def=subject_defacer_partitions,
    ins={"raw_scans": AssetIn(partition_mapping=MultiToSingleDimensionPartitionMapping("subject"))},
    io_manager_key="defaced_io_manager",
    group_name="defacing",
    kinds={"nifti"},
    automation_condition=AutomationCondition.eager(),
)
def defaced_scans(context: AssetExecutionContext, study: StudyConfig, raw_scans: Scan):
    """The defaced image and its kept-voxel mask (1 = unchanged); a tool failure is data."""
    method = context.partition_key.keys_by_dimension["defacer"]
    registered = study.defacers().get(method)
    if registered is None:
        raise KeyError(f"defacer {method!r} is no longer registered")
    defacer = registered.defacer.seeded(study.seed)
    result = defacer.deface(raw_scans.image, raw_scans.modality, raw_scans.labels)
    if result.status != "ok":
        context.log.warning(f"{method} on {raw_scans.subject_id}: {result.status}: {result.reason}")
    metadata = {
        **{
            key: value
            for key, value in result.record().items()
            if key not in ("seconds", "details")
        },
        "seconds": result.seconds,
        "source": registered.source,
        "seed": study.seed,
        **result.details,
        "percent_voxels_changed": round(100 * result.changed_fraction, 3)
        if result.status == "ok"
        else MetadataValue.null(),
    }
    if result.image is not None:
        metadata["before_after"] = png_metadata(
            before_after_thumbnail(raw_scans.image, result.image),
            f"{method} {raw_scans.subject_id}",
        )
    return Output(result, metadata=metadata)
