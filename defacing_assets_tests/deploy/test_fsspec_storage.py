"""Storage through a non-local fsspec file system (``memory://``), as on ``s3://``."""

import uuid

import fsspec
import pandas as pd
import pytest
from dagster import AssetIn, AssetKey, MultiPartitionKey, asset, instance_for_test, materialize
from upath import UPath

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.imaging import load_volume
from defacing_assets.imaging.atomic import atomic_directory, is_local
from defacing_assets.resources import study_resources
from defacing_assets.storage import DefacedScanStore, ScanStore, TableStore
from defacing_assets_tests.conftest import study_resources as ci_resources


@pytest.fixture
def store():
    """A fresh folder of fsspec's in-memory file system, removed afterwards."""
    url = f"memory://defacing-test-{uuid.uuid4().hex[:8]}"
    yield url
    memory = fsspec.filesystem("memory")
    if memory.exists(url):
        memory.rm(url, recursive=True)


def _files(url: str) -> list[str]:
    root = UPath(url)
    return sorted(p.path[len(root.path) :].lstrip("/") for p in root.rglob("*") if p.is_file())


def test_storage_url_from_the_environment_reaches_every_io_manager(monkeypatch, store):
    monkeypatch.setenv("DEFACING_STORAGE", store)
    resources = study_resources()
    stores = [r for name, r in resources.items() if name.endswith("io_manager")]
    assert len(stores) == 5
    for factory in stores:
        assert factory.base_path == store
        base = factory.create_io_manager(None)._base_path
        assert base.protocol == "memory" and not is_local(base)


@asset(
    ins={
        "scan": AssetIn("raw_scans", input_manager_key="scan_io_manager"),
        "defaced": AssetIn("defaced_scans", input_manager_key="defaced_io_manager"),
    }
)
def read_back(scan: Scan, defaced: DefacingResult) -> pd.DataFrame:
    """One row per voxel sum, written as a table to the same store."""
    return pd.DataFrame(
        {
            "subject": [scan.subject_id],
            "labels_max": [int(scan.labels.array.max())],
            "image_sum": [float(scan.image.array.sum())],
            "defaced_sum": [float(defaced.image.array.sum())],
            "kept": [int(defaced.kept_mask.array.sum())],
            "status": [defaced.status],
        }
    )


@asset
def table_again(read_back: pd.DataFrame) -> pd.DataFrame:
    return read_back


def test_volumes_and_tables_round_trip_and_replace_through_memory_fs(ci_cohort, tmp_path, store):
    resources = {
        **ci_resources(ci_cohort, tmp_path),
        "scan_io_manager": ScanStore(base_path=store),
        "defaced_io_manager": DefacedScanStore(base_path=store),
        "io_manager": TableStore(base_path=store),
    }
    key = MultiPartitionKey({"subject": "SYN001", "defacer": "original"})
    assets = [raw_scans, defaced_scans, read_back, table_again]
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("subjects", ["SYN001"])
        instance.add_dynamic_partitions("defacers", ["original"])
        for _ in range(2):  # the second pass replaces every stored partition in place
            for selection, partition in (
                ([raw_scans.key], "SYN001"),
                ([defaced_scans.key], key),
                ([read_back.key, table_again.key], None),
            ):
                result = materialize(
                    assets,
                    selection=selection,
                    partition_key=partition,
                    instance=instance,
                    resources=resources,
                )
                assert result.success
        assert instance.get_materialized_partitions(AssetKey("defaced_scans")) == {key}
        table = result.output_for_node("table_again")

    assert _files(store) == [
        "defaced_scans/defacer=original/subject=SYN001/image.nii.gz",
        "defaced_scans/defacer=original/subject=SYN001/kept_mask.nii.gz",
        "defaced_scans/defacer=original/subject=SYN001/result.json",
        "raw_scans/subject=SYN001/image.nii.gz",
        "raw_scans/subject=SYN001/labels.nii.gz",
        "raw_scans/subject=SYN001/scan.json",
        "read_back.parquet",
        "table_again.parquet",
    ]
    source = load_volume(ci_cohort / "SYN001" / "image.nii.gz")
    [row] = table.to_dict("records")
    assert row["subject"] == "SYN001" and row["status"] == "ok"
    assert row["labels_max"] == 8
    assert row["image_sum"] == pytest.approx(float(source.array.sum()), rel=1e-6)
    assert row["defaced_sum"] == pytest.approx(row["image_sum"], rel=1e-6)
    assert row["kept"] == source.array.size
    stored = pd.read_parquet(UPath(store, "table_again.parquet").open("rb"))
    pd.testing.assert_frame_equal(stored, table)


def test_interrupted_replace_on_an_object_store_never_reads_as_valid(store, monkeypatch):
    """The record file goes last: a partition copied halfway has no ``scan.json``."""
    folder = UPath(store) / "raw_scans" / "subject=S1"
    with atomic_directory(folder) as staging:
        (staging / "image.nii.gz").write_bytes(b"old image")
        (staging / "scan.json").write_text("{}")

    memory = fsspec.filesystem("memory")
    moved = []
    original_mv = memory.mv

    def failing_mv(source, target, **kwargs):
        if moved:  # the first file arrives, then the step is killed
            raise KeyboardInterrupt
        moved.append(target)
        return original_mv(source, target, **kwargs)

    monkeypatch.setattr(memory, "mv", failing_mv)
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(folder) as staging:
            (staging / "scan.json").write_text('{"new": true}')
            (staging / "image.nii.gz").write_bytes(b"new image")
            (staging / "labels.nii.gz").write_bytes(b"new labels")
    assert [UPath(f"memory://{m}").name for m in moved] == ["image.nii.gz"]
    assert not (folder / "scan.json").exists()
