"""raw_scans: one subject's image and label map, read and validated from the data folder."""

from dagster import AssetExecutionContext, AutomationCondition, MetadataValue, Output, asset

from defacing_assets.assets.metadata import png_metadata
from defacing_assets.checks import RAW_SCAN_CHECKS, raw_scan_check_results
from defacing_assets.cohort.fingerprint import file_sha256
from defacing_assets.cohort.sources import (
    SubjectSource,
    duplicate_problems,
    read_scan,
    subject_id_problem,
)
from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.thumbnail import slice_thumbnail
from defacing_assets.partitions import subjects_partitions
from defacing_assets.resources import StudyConfig


@asset(
    partitions_def=subjects_partitions,
    io_manager_key="scan_io_manager",
    group_name="ingest",
    kinds={"nifti"},
    check_specs=RAW_SCAN_CHECKS,
    automation_condition=AutomationCondition.eager(),
)
def raw_scans(context: AssetExecutionContext, study: StudyConfig):
    """Image + 9-class label map of one subject (labels absent for unlabelled CT).

    A subject that is another subject's scan again (added as a partition
    before the sensor refused such copies, or by hand) fails, naming both:
    one patient in two folds would leak test data into training.
    """
    subject_id = context.partition_key
    problem = subject_id_problem(subject_id)
    if problem:
        raise ValueError(problem)
    source = study.source_for(subject_id)
    scan = read_scan(source, study.roi_names)
    partitions = set(context.instance.get_dynamic_partitions(subjects_partitions.name))
    duplicate = partition_duplicate(subject_id, study.subject_sources()[0], partitions)
    if duplicate:
        raise InvalidScanError(str(source.path), duplicate)
    voxels = scan.voxels_per_oar()
    yield Output(
        scan,
        metadata={
            "format": source.format,
            "modality": scan.modality,
            "shape": str(scan.image.shape),
            "spacing_mm": str(tuple(round(s, 4) for s in scan.image.spacing)),
            "orientation": scan.image.orientation,
            "input_sha256": MetadataValue.json(file_sha256([source.path])),
            "voxels_per_oar": MetadataValue.json(voxels),
            "absent_structures": ", ".join(scan.absent_structures) or "none",
            "thumbnail": png_metadata(slice_thumbnail(scan.image, scan.labels), subject_id),
        },
    )
    yield from raw_scan_check_results(scan)


def partition_duplicate(
    subject_id: str, sources: list[SubjectSource], partitions: set[str]
) -> str | None:
    """Why ``subject_id`` is another subject partition again (same files, or same voxels
    and affine), or None. Of two such partitions the first by id is kept; subjects that
    are not partitions are not compared (the sensor refused them)."""
    listed = [s for s in sources if s.subject_id in partitions | {subject_id}]
    return duplicate_problems(listed).get(subject_id)
