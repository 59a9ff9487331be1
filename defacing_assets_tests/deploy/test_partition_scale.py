"""The discovery sensor at scale: known subjects cost one listing, new ones are still found."""

import pytest
from dagster import DagsterInstance, build_sensor_context

from defacing_assets.resources import StudyConfig
from defacing_assets.sensors import listed_ids, subject_discovery_sensor
from defacing_assets_tests.builders import write_good_subject


def _tick(instance, data):
    context = build_sensor_context(
        instance=instance, resources={"study": StudyConfig(data_root=str(data), profile="ci")}
    )
    return subject_discovery_sensor(context)


def test_known_subjects_are_not_read_again(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for seed, subject in enumerate(("A1", "B2")):
        write_good_subject(data, subject, seed=seed)
    (data / "C3_ct.nii.gz").write_bytes(b"")
    (data / ".hidden").mkdir()
    assert listed_ids(str(data)) == {"A1", "B2", "C3"}
    assert listed_ids(str(tmp_path / "missing")) is None

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("subjects", ["A1", "B2", "C3"])

        def no_reading(self):
            raise AssertionError("discovery read the data folder's subjects")

        monkeypatch.setattr(StudyConfig, "subject_sources", no_reading)
        skipped = _tick(instance, data).skip_reason.skip_message
        assert skipped == "no new subjects: every data folder entry is a partition"

        monkeypatch.undo()
        write_good_subject(data, "D4", seed=3)
        [request] = _tick(instance, data).dynamic_partitions_requests
        assert list(request.partition_keys) == ["D4"]


def test_a_refused_entry_keeps_being_reported(tmp_path):
    data = tmp_path / "data"
    write_good_subject(data, "A1")
    write_good_subject(data, "bad id")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("subjects", ["A1"])
        result = _tick(instance, data)
        assert not result.dynamic_partitions_requests
        assert result.skip_reason.skip_message == "no new valid subjects"  # the full discovery


def test_missing_data_folder_still_fails_clearly(tmp_path):
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(FileNotFoundError, match="data folder does not exist"):
            _tick(instance, tmp_path / "absent")
