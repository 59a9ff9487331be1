"""The nightly schedule: re-request ingest and defacing partitions that are missing or failed.

Automation fills partitions as they appear; this catches what it does not:
a tool that failed (status ``failed``) after it was fixed or upgraded,
partitions whose runs were lost, and partitions that already existed when
the automation sensor first ran (eager automation requests only partitions
that go missing after its first tick). Downstream assets follow by automation
once these materialize.
"""

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultScheduleStatus,
    MultiPartitionKey,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from defacing_assets.partitions import defacers_partitions, subjects_partitions

DEFACED = AssetKey("defaced_scans")
RAW = AssetKey("raw_scans")


def subjects_to_ingest(instance) -> list[str]:
    """Subjects whose raw_scans partition was never materialized."""
    done = instance.get_materialized_partitions(RAW)
    return [s for s in instance.get_dynamic_partitions(subjects_partitions.name) if s not in done]


def partitions_to_retry(instance) -> list[MultiPartitionKey]:
    """subject x defacer keys never materialized, or whose latest result failed, of subjects
    already ingested (the others wait for their raw_scans)."""
    ingested = instance.get_materialized_partitions(RAW)
    subjects = [
        s for s in instance.get_dynamic_partitions(subjects_partitions.name) if s in ingested
    ]
    defacers = instance.get_dynamic_partitions(defacers_partitions.name)
    done = instance.get_materialized_partitions(DEFACED)
    wanted = []
    for subject in subjects:
        for defacer in defacers:
            key = MultiPartitionKey({"subject": subject, "defacer": defacer})
            if key not in done:
                wanted.append(key)
                continue
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=DEFACED, asset_partitions=[key]), limit=1
            ).records
            status = records[0].asset_materialization.metadata.get("status")
            if status is not None and status.value == "failed":
                wanted.append(key)
    return wanted


@schedule(
    cron_schedule="0 1 * * *",
    target=[RAW],
    default_status=DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def nightly_ingest_retry(context: ScheduleEvaluationContext):
    """Each night: one run per subject whose raw_scans partition is missing."""
    subjects = subjects_to_ingest(context.instance)
    if not subjects:
        return SkipReason("every raw_scans partition is materialized")
    night = f"{context.scheduled_execution_time:%Y%m%d}"
    return [
        RunRequest(partition_key=subject, run_key=f"ingest-{subject}-{night}")
        for subject in subjects
    ]


@schedule(
    cron_schedule="0 2 * * *",
    target=[DEFACED],
    default_status=DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def nightly_defacing_retry(context: ScheduleEvaluationContext):
    """Each night, after ingest: one run per missing or failed defaced_scans partition of an
    ingested subject."""
    keys = partitions_to_retry(context.instance)
    if not keys:
        return SkipReason("every defaced_scans partition of an ingested subject is ok")
    night = f"{context.scheduled_execution_time:%Y%m%d}"
    return [RunRequest(partition_key=key, run_key=f"retry-{key}-{night}") for key in keys]


NIGHTLY_SCHEDULES = [nightly_ingest_retry, nightly_defacing_retry]
