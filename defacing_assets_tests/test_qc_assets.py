"""QC, voxel ratios and the cohort as Dagster assets."""

import pandas as pd
import pytest
from dagster import (
    AssetMaterialization,
    MultiPartitionKey,
    build_asset_context,
    instance_for_test,
    materialize,
)

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.qc.overrides import OverrideError
from defacing_assets.qc.verdict import QC_COLUMNS
from defacing_assets.resources import StudyConfig
from defacing_assets_tests.conftest import study_resources


@pytest.fixture
def study(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    return folder


def test_pydeface_partition_passes_qc_and_loses_level_three(ci_cohort, study):
    assets = [raw_scans, defaced_scans, qc_labels, voxel_ratios]
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("subjects", ["SYN001"])
        instance.add_dynamic_partitions("defacers", ["pydeface"])
        resources = study_resources(ci_cohort, study)
        assert materialize(
            [raw_scans], partition_key="SYN001", instance=instance, resources=resources
        ).success
        key = MultiPartitionKey({"subject": "SYN001", "defacer": "pydeface"})
        result = materialize(
            assets, selection=assets[1:], partition_key=key, instance=instance, resources=resources
        )
        assert result.success
        qc_metadata = result.asset_materializations_for_node("qc_labels")[0].metadata
        assert qc_metadata["passed"].value is True
        assert qc_metadata["renders"].value.startswith("![")
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "original_shows_face" and check.passed
    store = study / "store"
    qc = pd.read_parquet(store / "qc_labels" / "defacer=pydeface" / "subject=SYN001.parquet")
    assert list(qc.columns[: len(QC_COLUMNS)]) == QC_COLUMNS
    assert qc.loc[0, "eyes_removed"] and qc.loc[0, "nose_removed"] and qc.loc[0, "mouth_removed"]
    ratios = pd.read_parquet(store / "voxel_ratios" / "defacer=pydeface" / "subject=SYN001.parquet")
    ratios = ratios.set_index("oar")
    assert ratios.loc["LN_Neck_III_L", "completely_removed"]
    assert ratios.loc["Parotid_L", "ratio"] > 0.9


def _qc_partitions(n_subjects: int, failing: set[tuple[str, str]] = frozenset()):
    partitions = {}
    for index in range(n_subjects):
        subject = f"S{index}"
        for method in ("original", "pydeface", "never_works"):
            passed = method == "pydeface" and (subject, method) not in failing
            row = {column: None for column in QC_COLUMNS}
            row.update(
                subject=subject,
                defacer=method,
                passed=passed,
                labelled=True,
                face_detected=not passed,
            )
            partitions[f"{method}|{subject}"] = pd.DataFrame([row], columns=QC_COLUMNS)
    return partitions


def test_override_flips_a_verdict_and_changes_the_cohort(study):
    config = StudyConfig(data_root=str(study), study_dir=str(study), seed=1)
    partitions = _qc_partitions(7)
    [before] = study_cohort(build_asset_context(), config, partitions)
    before = before.value
    assert sorted(before["subject"]) == [f"S{i}" for i in range(7)]

    (study / "qc_overrides.csv").write_text(
        "subject,defacer,passed,rater,note\nS3,pydeface,false,AB,mouth visible in oblique\n"
    )
    [output] = study_cohort(build_asset_context(), config, partitions)
    assert "S3" not in set(output.value["subject"])
    assert output.metadata["manual_overrides"].value == 1
    assert "pydeface: QC failed" in output.metadata["excluded"].value
    assert output.metadata["compared_methods"].value == "original, pydeface"


def test_bad_override_file_stops_the_cohort_with_the_line(study):
    (study / "qc_overrides.csv").write_text("subject,defacer,passed\nS99,pydeface,true\n")
    config = StudyConfig(data_root=str(study), study_dir=str(study))
    with pytest.raises(OverrideError, match="qc_overrides.csv:2: unknown subject 'S99'"):
        list(study_cohort(build_asset_context(), config, _qc_partitions(5)))


def test_voxel_loss_writes_table1_and_figure2(study):
    qc = _qc_partitions(2, failing={("S1", "pydeface")})
    ratios = {}
    for key, frame in qc.items():
        subject, method = frame.loc[0, "subject"], frame.loc[0, "defacer"]
        ratios[key] = pd.DataFrame(
            [
                {
                    "subject": subject,
                    "defacer": method,
                    "oar": "LN_Neck_III_L",
                    "label": 5,
                    "voxels_before": 10,
                    "voxels_kept": 0 if method == "pydeface" else 10,
                    "ratio": 0.0 if method == "pydeface" else 1.0,
                    "completely_removed": method == "pydeface",
                }
            ]
        )
    config = StudyConfig(data_root=str(study), study_dir=str(study))
    output = voxel_loss(config, ratios, qc)
    table = output.value.set_index("OAR")
    assert table.loc["LN_Neck_III_L", "pydeface"] == "1"
    assert table.loc["Unavailable incl. QC failures", "pydeface"] == "2 (100%)"
    assert (study / "figures" / "figure2.png").read_bytes()[:4] == b"\x89PNG"


def test_unchanged_cohort_is_not_materialized_again(study):
    """A new defacer that passes QC nowhere leaves the cohort as it was: nothing
    new downstream (no model retrained)."""
    config = StudyConfig(data_root=str(study), study_dir=str(study), seed=1)
    with instance_for_test() as instance:
        [first] = study_cohort(build_asset_context(instance=instance), config, _qc_partitions(6))
        instance.report_runless_asset_event(
            AssetMaterialization("study_cohort", metadata=first.metadata)
        )
        partitions = _qc_partitions(6)
        for key, frame in list(partitions.items()):
            if key.startswith("never_works|"):
                partitions[key.replace("never_works", "new_tool")] = frame.assign(
                    defacer="new_tool"
                )
        assert list(study_cohort(build_asset_context(instance=instance), config, partitions)) == []

        (study / "qc_overrides.csv").write_text("subject,defacer,passed\nS2,pydeface,false\n")
        [changed] = study_cohort(build_asset_context(instance=instance), config, partitions)
        assert "S2" not in set(changed.value["subject"])
