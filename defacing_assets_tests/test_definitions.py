"""The Dagster layer: definitions load, raw_scans materializes, sensor and automation."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from defacing_assets.assets.ingest import raw_scans
from defacing_assets.definitions import defs
from defacing_assets.execution import gpu_slots
from defacing_assets.partitions import subjects_partitions
from defacing_assets.resources import StudyConfig
from defacing_assets.sensors import subject_discovery_sensor
from defacing_assets.storage import ScanStore, TableStore
from defacing_assets_tests.builders import write_good_subject

REPO = Path(__file__).resolve().parents[1]


def _resources(data: Path, store: Path) -> dict:
    return {
        "study": StudyConfig(data_root=str(data), profile="ci"),
        "scan_io_manager": ScanStore(base_path=str(store)),
        "io_manager": TableStore(base_path=str(store)),
    }


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def test_definitions_are_loadable():
    Definitions.validate_loadable(defs)


def test_dagster_cli_validates_the_project():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _partitions(definition) -> str | None:
    if definition is None:
        return None
    if isinstance(definition, MultiPartitionsDefinition):
        return " x ".join(
            f"{d.name}:{_partitions(d.partitions_def)}" for d in definition.partitions_defs
        )
    if isinstance(definition, StaticPartitionsDefinition):
        return ",".join(definition.get_partition_keys())
    return definition.name


def test_snapshot_of_assets_and_partitions():
    graph = defs.resolve_asset_graph()
    snapshot = {
        key.to_user_string(): (
            _partitions(graph.get(key).partitions_def),
            sorted(k.to_user_string() for k in graph.get(key).parent_keys),
        )
        for key in graph.get_all_asset_keys()
    }
    assert snapshot == {
        "raw_scans": ("subjects", []),
        "defaced_scans": ("defacer:defacers x subject:subjects", ["raw_scans"]),
        "qc_labels": ("defacer:defacers x subject:subjects", ["defaced_scans", "raw_scans"]),
        "voxel_ratios": ("defacer:defacers x subject:subjects", ["defaced_scans", "raw_scans"]),
        "study_cohort": (None, ["qc_labels"]),
        "voxel_loss": (None, ["qc_labels", "voxel_ratios"]),
        "unet_models": (
            "defacer:defacers x fold:0,1,2,3,4",
            ["defaced_scans", "raw_scans", "study_cohort"],
        ),
        "predictions": (
            "eval_defacer:defacers x train_defacer:defacers",
            ["defaced_scans", "study_cohort", "unet_models"],
        ),
        "segmentation_metrics": (
            "eval_defacer:defacers x train_defacer:defacers",
            ["defaced_scans", "predictions", "raw_scans"],
        ),
        "stats_tables": (None, ["segmentation_metrics", "study_cohort", "voxel_loss"]),
        "study_report": (
            None,
            [
                "defaced_scans",
                "qc_labels",
                "raw_scans",
                "segmentation_metrics",
                "stats_tables",
                "study_cohort",
                "voxel_loss",
                "voxel_ratios",
            ],
        ),
    }
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "geometry_consistent",
        "labels_present",
        "model_quality",
        "original_shows_face",
        "stored_files",
    }


@pytest.mark.parametrize("name", ["unet_models", "predictions"])
def test_training_and_inference_run_on_gpu_routed_retried_steps(name):
    model = defs.get_assets_def(name)
    assert model.op.tags["defacing/resource"] == "gpu"
    assert model.op.pool == "gpu"
    k8s = json.loads(model.op.tags["dagster-k8s/config"])
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert k8s["pod_spec_config"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert model.op.retry_policy.max_retries >= 1

    executor = defs.resolve_implicit_global_asset_job_def().executor_def
    assert executor.name == "gpu_aware_multiprocess"
    limits = executor.apply_config_mapping({}).value["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "defacing/resource", "value": "gpu", "limit": gpu_slots()}]


def test_raw_scans_for_two_subjects(ci_cohort, tmp_path, instance):
    store = tmp_path / "store"
    instance.add_dynamic_partitions("subjects", ["SYN001", "SYN002"])
    for subject in ("SYN001", "SYN002"):
        result = materialize(
            [raw_scans],
            partition_key=subject,
            instance=instance,
            resources=_resources(ci_cohort, store),
        )
        assert result.success
        metadata = result.asset_materializations_for_node("raw_scans")[0].metadata
        assert metadata["voxels_per_oar"].value["Parotid_L"] > 0
        assert len(metadata["input_sha256"].value) == 4
        assert metadata["thumbnail"].value.startswith("![")
        checks = result.get_asset_check_evaluations()
        assert {c.check_name: c.passed for c in checks} == {
            "geometry_consistent": True,
            "labels_present": True,
        }
        folder = store / "raw_scans" / f"subject={subject}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "image.nii.gz",
            "labels.nii.gz",
            "scan.json",
        ]
    assert instance.get_materialized_partitions(AssetKey("raw_scans")) == {"SYN001", "SYN002"}


def test_bad_input_fails_clearly_and_keeps_the_stored_partition(tmp_path, instance):
    data, store = tmp_path / "data", tmp_path / "store"
    write_good_subject(data, "S1")
    write_good_subject(data, "S2", seed=1)
    instance.add_dynamic_partitions("subjects", ["S1", "S2"])
    for subject in ("S1", "S2"):
        assert materialize(
            [raw_scans], partition_key=subject, instance=instance, resources=_resources(data, store)
        ).success
    stored = {p: p.read_bytes() for p in (store / "raw_scans").rglob("*") if p.is_file()}

    (data / "S1" / "image.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = materialize(
        [raw_scans],
        partition_key="S1",
        instance=instance,
        resources=_resources(data, store),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "InvalidScanError" in failure
    assert "S1/image.nii.gz: corrupt or truncated gzip" in failure
    after = {p: p.read_bytes() for p in (store / "raw_scans").rglob("*") if p.is_file()}
    assert after == stored


def _sensor_result(instance, data: Path):
    context = build_sensor_context(
        instance=instance, resources={"study": StudyConfig(data_root=str(data), profile="ci")}
    )
    return subject_discovery_sensor(context)


def test_sensor_adds_valid_subjects_once_and_refuses_unsafe_ones(tmp_path, instance):
    data = tmp_path / "data"
    for seed, subject in enumerate(("A1", "B.2", "bad id", "x..y", "Dup", "DUP")):
        write_good_subject(data, subject, seed=seed)
    broken = write_good_subject(data, "broken")
    (broken / "label.nii.gz").write_bytes(b"junk")
    result = _sensor_result(instance, data)
    [request] = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == ["A1", "B.2"]

    instance.add_dynamic_partitions("subjects", list(request.partition_keys))
    again = _sensor_result(instance, data)
    assert not again.dynamic_partitions_requests

    write_good_subject(data, "a1", seed=6)
    write_good_subject(data, "C3", seed=7)
    later = _sensor_result(instance, data)
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["C3"]


def test_sensor_on_an_empty_data_folder_says_so(tmp_path, instance):
    (tmp_path / "data").mkdir()
    result = _sensor_result(instance, tmp_path / "data")
    assert result.skip_reason.skip_message == (
        f"no subjects: the data folder {tmp_path / 'data'} is empty"
    )


def test_automation_requests_exactly_the_new_subjects(ci_cohort, tmp_path, instance):
    resources = _resources(ci_cohort, tmp_path / "store")
    instance.add_dynamic_partitions("subjects", ["SYN001"])
    assert materialize(
        [raw_scans], partition_key="SYN001", instance=instance, resources=resources
    ).success
    graph = Definitions(assets=[raw_scans], resources=resources)
    first = evaluate_automation_conditions(defs=graph, instance=instance)
    assert first.total_requested == 0
    instance.add_dynamic_partitions("subjects", ["SYN002"])
    result = evaluate_automation_conditions(defs=graph, instance=instance, cursor=first.cursor)
    requested = result.get_requested_partitions(AssetKey("raw_scans"))
    assert requested == {"SYN002"}
    assert subjects_partitions.name == "subjects"


def test_workspace_and_pyproject_name_the_definitions_module():
    assert "defacing_assets.definitions" in (REPO / "workspace.yaml").read_text()
    assert 'module_name = "defacing_assets.definitions"' in (REPO / "pyproject.toml").read_text()
    assert shutil.which("defacing-assets", path=str(Path(sys.executable).parent))
