"""The stored_files asset check: a partition Dagster records as materialized but whose
files are gone from storage fails the check, naming the partition and the files."""

from __future__ import annotations

import shutil

from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, materialize

from defacing_assets.assets.graph import STUDY_ASSETS
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.checks import STORED_FILES, stored_files_checks
from defacing_assets.definitions import defs
from defacing_assets.resources import StudyConfig
from defacing_assets.storage import ScanStore, TableStore
from defacing_assets_tests.builders import write_good_subject

CHECKS = stored_files_checks(STUDY_ASSETS)


def run_stored_files_check(instance, resources: dict, assets: list, asset: AssetKey):
    """Run ``asset``'s stored_files check alone (``assets``: the definitions its run needs);
    its evaluation."""
    key = AssetCheckKey(asset, STORED_FILES)
    [check] = [c for c in CHECKS if key in c.check_keys]
    result = materialize(
        [*assets, check],
        selection=AssetSelection.checks(key),
        instance=instance,
        resources=resources,
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_every_partitioned_stored_asset_has_the_check_in_the_definitions() -> None:
    graph = defs.resolve_asset_graph()
    checks = graph.asset_check_keys
    checked = {k.asset_key.to_user_string() for k in checks if k.name == STORED_FILES}
    partitioned = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }
    assert checked == partitioned and "unet_models" in checked


def test_a_partition_missing_from_storage_fails_the_check(tmp_path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    resources = {
        "study": StudyConfig(data_root=str(data), profile="ci"),
        "scan_io_manager": ScanStore(base_path=str(store)),
        "io_manager": TableStore(base_path=str(store)),
    }
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("subjects", ["S1", "S2"])
        for seed, subject in enumerate(("S1", "S2")):
            write_good_subject(data, subject, seed=seed)
            assert materialize(
                [raw_scans], partition_key=subject, instance=instance, resources=resources
            ).success

        passed = run_stored_files_check(instance, resources, [raw_scans], raw_scans.key)
        assert passed.passed and passed.metadata["partitions_checked"].value == 2

        (store / "raw_scans" / "subject=S1" / "image.nii.gz").unlink()
        shutil.rmtree(store / "raw_scans" / "subject=S2")
        failed = run_stored_files_check(instance, resources, [raw_scans], raw_scans.key)
        assert not failed.passed and failed.severity.value == "ERROR"
        assert failed.metadata["partitions_missing"].value == 2
        missing = failed.metadata["missing"].value
        assert [file.rsplit("/", 2)[-2:] for file in missing["S1"]] == [
            ["subject=S1", "image.nii.gz"]
        ]
        assert missing["S2"][0].endswith("subject=S2/scan.json")
