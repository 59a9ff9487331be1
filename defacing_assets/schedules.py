"""The nightly schedule: re-request defacing partitions that are missing or failed.

Automation fills partitions as they appear; this catches what it does not
retry: a tool that failed (status ``failed``) after it was fixed or upgraded,
and partitions whose runs were lost.
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


def partitions_to_retry(instance) -> list[MultiPartitionKey]:
    """subject x defacer keys never materialized, or whose latest result failed."""
    subjects = instance.get_dynamic_partitions(subjects_partitions.name)
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
    cron_schedule="0 2 * * *",
    target=[DEFACED],
    default_status=DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def nightly_defacing_retry(context: ScheduleEvaluationContext):
    """Each night: one run per missing or failed defaced_scans partition."""
    keys = partitions_to_retry(context.instance)
    if not keys:
        return SkipReason("every defaced_scans partition is materialized and ok")
    return [
        RunRequest(
            partition_key=key, run_key=f"retry-{key}-{context.scheduled_execution_time:%Y%m%d}"
        )
        for key in keys
    ]
