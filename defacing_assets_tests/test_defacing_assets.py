"""defaced_scans in Dagster: storage, failures as data, sensor, automation, schedule."""

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetKey,
    Definitions,
    MultiPartitionKey,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.imaging import load_volume
from defacing_assets.schedules import (
    nightly_defacing_retry,
    nightly_ingest_retry,
    partitions_to_retry,
)
from defacing_assets.sensors import defacer_registry_sensor
from defacing_assets_tests.builders import write_tool
from defacing_assets_tests.conftest import study_resources

ZERO_FRONT = """
import sys
import nibabel as nib
import numpy as np
image = nib.load(sys.argv[1])
data = np.asanyarray(image.dataobj).copy()
data[:, data.shape[1] * 3 // 4:, :] = 0
nib.save(nib.Nifti1Image(data, image.affine), sys.argv[2])
"""


@pytest.fixture
def study(tmp_path, ci_cohort):
    folder = tmp_path / "study"
    folder.mkdir()
    return folder


@pytest.fixture
def instance():
    with instance_for_test() as ephemeral:
        yield ephemeral


def _key(subject, defacer):
    return MultiPartitionKey({"subject": subject, "defacer": defacer})


def _materialize(instance, resources, subject, defacer):
    if subject not in instance.get_materialized_partitions(AssetKey("raw_scans")):
        assert materialize(
            [raw_scans], partition_key=subject, instance=instance, resources=resources
        ).success
    return materialize(
        [raw_scans, defaced_scans],
        selection=[defaced_scans.key],
        partition_key=_key(subject, defacer),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def test_defaced_scan_stored_with_kept_mask_and_metadata(ci_cohort, study, instance):
    write_tool(study, "zero_front", ZERO_FRONT)
    resources = study_resources(ci_cohort, study)
    instance.add_dynamic_partitions("subjects", ["SYN001"])
    instance.add_dynamic_partitions("defacers", ["zero_front"])
    result = _materialize(instance, resources, "SYN001", "zero_front")
    assert result.success
    metadata = result.asset_materializations_for_node("defaced_scans")[0].metadata
    assert metadata["status"].value == "ok"
    assert 0 < metadata["percent_voxels_changed"].value < 30
    assert metadata["source"].value == str(study / "defacers.yaml")
    folder = study / "store" / "defaced_scans" / "defacer=zero_front" / "subject=SYN001"
    image, kept = load_volume(folder / "image.nii.gz"), load_volume(folder / "kept_mask.nii.gz")
    raw = load_volume(ci_cohort / "SYN001" / "image.nii.gz")
    assert (image.array == raw.array * kept.array).all()


def test_tool_failure_is_stored_as_data(ci_cohort, study, instance):
    write_tool(
        study, "crashes", "import sys\nsys.stderr.write('segfault in face finder')\nsys.exit(3)\n"
    )
    resources = study_resources(ci_cohort, study)
    instance.add_dynamic_partitions("subjects", ["SYN001"])
    instance.add_dynamic_partitions("defacers", ["crashes"])
    result = _materialize(instance, resources, "SYN001", "crashes")
    assert result.success
    metadata = result.asset_materializations_for_node("defaced_scans")[0].metadata
    assert metadata["status"].value == "failed"
    assert "segfault in face finder" in metadata["reason"].value
    folder = study / "store" / "defaced_scans" / "defacer=crashes" / "subject=SYN001"
    assert sorted(p.name for p in folder.iterdir()) == ["result.json"]
    assert partitions_to_retry(instance) == [_key("SYN001", "crashes")]


def test_registry_sensor_adds_available_defacers_once(ci_cohort, study, instance):
    resources = {"study": study_resources(ci_cohort, study)["study"]}

    def tick():
        return defacer_registry_sensor(build_sensor_context(instance=instance, resources=resources))

    [request] = tick().dynamic_partitions_requests
    assert {"original", "pydeface"} <= set(request.partition_keys)
    assert "fsl_deface" not in request.partition_keys, "not installed here"
    instance.add_dynamic_partitions("defacers", list(request.partition_keys))
    assert not tick().dynamic_partitions_requests
    write_tool(study, "zero_front", ZERO_FRONT)
    assert list(tick().dynamic_partitions_requests[0].partition_keys) == ["zero_front"]


def test_new_defacer_requests_only_its_partitions(ci_cohort, study, instance):
    resources = study_resources(ci_cohort, study)
    subjects = ["SYN001", "SYN002"]
    instance.add_dynamic_partitions("subjects", subjects)
    instance.add_dynamic_partitions("defacers", ["original"])
    for subject in subjects:
        assert _materialize(instance, resources, subject, "original").success
    graph = Definitions(assets=[raw_scans, defaced_scans], resources=resources)
    settled = evaluate_automation_conditions(defs=graph, instance=instance)
    assert settled.total_requested == 0

    write_tool(study, "zero_front", ZERO_FRONT)
    instance.add_dynamic_partitions("defacers", ["zero_front"])
    result = evaluate_automation_conditions(defs=graph, instance=instance, cursor=settled.cursor)
    assert result.get_requested_partitions(AssetKey("raw_scans")) == set()
    assert result.get_requested_partitions(AssetKey("defaced_scans")) == {
        _key("SYN001", "zero_front"),
        _key("SYN002", "zero_front"),
    }


def test_nightly_schedule_requests_missing_partitions(ci_cohort, study, instance):
    instance.add_dynamic_partitions("subjects", ["SYN001", "SYN002"])
    instance.add_dynamic_partitions("defacers", ["original"])
    resources = study_resources(ci_cohort, study)
    assert _materialize(instance, resources, "SYN001", "original").success
    context = build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 26, 2, tzinfo=UTC)
    )
    assert isinstance(nightly_defacing_retry(context), SkipReason), "SYN002 is not ingested"
    [ingest] = nightly_ingest_retry(context)
    assert ingest.run_key == "ingest-SYN002-20261126" and ingest.partition_key == "SYN002"
    assert materialize(
        [raw_scans], partition_key="SYN002", instance=instance, resources=resources
    ).success
    assert isinstance(nightly_ingest_retry(context), SkipReason)
    [retry] = nightly_defacing_retry(context)
    assert retry.run_key == f"retry-{_key('SYN002', 'original')}-20261126"
    assert retry.partition_key == _key("SYN002", "original")
