"""The instance of deploy/dagster.yaml on a real PostgreSQL server: materialize, read back."""

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    materialize,
)
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets_tests.conftest import study_resources

SUBJECTS = ["SYN001", "SYN002"]


def _key(subject: str, defacer: str) -> MultiPartitionKey:
    return MultiPartitionKey({"subject": subject, "defacer": defacer})


def test_postgres_instance_materializes_and_reads_back(deploy_instance_env, ci_cohort, tmp_path):
    resources = study_resources(ci_cohort, tmp_path / "study")
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        instance.add_dynamic_partitions("subjects", SUBJECTS)
        instance.add_dynamic_partitions("defacers", ["original", "pydeface"])
        for subject in SUBJECTS:
            assert materialize(
                [raw_scans], partition_key=subject, instance=instance, resources=resources
            ).success
            assert materialize(
                [raw_scans, defaced_scans],
                selection=[defaced_scans.key],
                partition_key=_key(subject, "original"),
                instance=instance,
                resources=resources,
            ).success

    # A second instance from the same yaml: everything below comes from the database.
    with DagsterInstance.from_config(str(deploy_instance_env)) as reader:
        assert reader.get_dynamic_partitions("subjects") == SUBJECTS
        assert reader.get_dynamic_partitions("defacers") == ["original", "pydeface"]
        assert reader.get_materialized_partitions(AssetKey("raw_scans")) == set(SUBJECTS)
        assert reader.get_materialized_partitions(AssetKey("defaced_scans")) == {
            _key(subject, "original") for subject in SUBJECTS
        }
        records = reader.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("defaced_scans")), limit=10
        ).records
        statuses = {
            r.asset_materialization.partition: r.asset_materialization.metadata["status"].value
            for r in records
        }
        assert statuses == {_key(subject, "original"): "ok" for subject in SUBJECTS}
        raw = reader.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("raw_scans"), asset_partitions=["SYN002"]),
            limit=1,
        ).records[0]
        assert raw.asset_materialization.metadata["voxels_per_oar"].value["Parotid_L"] > 0
        runs = reader.get_runs()
        assert len(runs) == 4
        assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
        assert reader.get_concurrency_config().pool_config.default_pool_limit == 1
