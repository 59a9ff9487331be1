"""Issue 9, the user's path: a fourth defacer recomputes only what it touches.

A `ci` study runs three methods (`original`, `quickshear`, and `zero_front`, a
command-line tool in the study's ``defacers.yaml``) the way a deployment does:
the two sensors register subjects and defacers, and the declarative automation
requests what is missing. Then the user adds a fourth tool as a YAML stanza; the
registry sensor and the automation must materialize only that method's
partitions and the unpartitioned summaries downstream, each once.

The graph stops at ``voxel_loss``: `unet_models` needs 5 usable subjects for
5-fold training and two `ci` subjects give at most 2, so training, inference and
the statistics downstream are left out (``test_training_assets`` covers them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.defacers import registry as registry_module
from defacing_assets.sensors import defacer_registry_sensor, subject_discovery_sensor
from defacing_assets_tests.builders import write_tool
from defacing_assets_tests.conftest import study_resources

GRAPH = [raw_scans, defaced_scans, qc_labels, voxel_ratios, study_cohort, voxel_loss]
SUBJECTS = ["SYN001", "SYN002"]
INSTALLED_BUILTINS = {"original", "quickshear"}
"""The built-ins this test's machine has: the others (pydeface ~10 s a subject, deepdefacer,
hnc_safe) would only make it slower, and which of them are installed varies by machine."""

ZERO_FRONT = """
import sys
import nibabel as nib
import numpy as np
image = nib.load(sys.argv[1])
data = np.asanyarray(image.dataobj).copy()
data[:, data.shape[1] * {numerator} // {denominator}:, :] = 0
nib.save(nib.Nifti1Image(data, image.affine), sys.argv[2])
"""


def add_tool(study: Path, name: str, numerator: int, denominator: int) -> None:
    """A stand-in tool zeroing the front of the image from numerator/denominator on."""
    write_tool(study, name, ZERO_FRONT.format(numerator=numerator, denominator=denominator))


@pytest.fixture
def only_installed_builtins(monkeypatch):
    every_builtin = registry_module._python_builtins
    monkeypatch.setattr(
        registry_module,
        "_python_builtins",
        lambda: [d for d in every_builtin() if d.name in INSTALLED_BUILTINS],
    )


class Deployment:
    """The sensors and the automation sensor of one instance, ticked by hand."""

    def __init__(self, instance, resources):
        self.instance, self.resources = instance, resources
        self.defs = Definitions(assets=GRAPH, resources=resources)
        self.cursor = None
        self.requested: list[dict[str, set]] = []

    def tick_sensors(self) -> dict[str, list[str]]:
        """Both discovery sensors once; their partition requests applied as the daemon does."""
        added = {}
        for sensor in (subject_discovery_sensor, defacer_registry_sensor):
            context = build_sensor_context(
                instance=self.instance, resources={"study": self.resources["study"]}
            )
            for request in sensor(context).dynamic_partitions_requests or []:
                self.instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
                added[request.partitions_def_name] = sorted(request.partition_keys)
        return added

    def settle(self, max_ticks: int = 6) -> None:
        """Automation ticks until one requests nothing; each tick's requests are run, one run
        per partition key (upstream keys first, as the graph orders them), before the next."""
        for _ in range(max_ticks):
            result = evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, cursor=self.cursor
            )
            self.cursor = result.cursor
            if result.total_requested == 0:
                return
            runs: dict[str | None, list] = {}
            for asset in GRAPH:
                for key in sorted(result.get_requested_partitions(asset.key), key=str):
                    runs.setdefault(key, []).append(asset)
            self.requested.append(
                {
                    asset.key.to_user_string(): result.get_requested_partitions(asset.key)
                    for asset in GRAPH
                    if result.get_requested_partitions(asset.key)
                }
            )
            for key, assets in runs.items():
                run = materialize(
                    GRAPH,
                    selection=assets,
                    partition_key=key,
                    instance=self.instance,
                    resources=self.resources,
                )
                assert run.success, f"run of {assets} for {key} failed"
        raise AssertionError(f"automation still requesting after {max_ticks} ticks")

    def materializations(self) -> dict[str, Counter]:
        """How many times each partition (None: unpartitioned) of each asset was materialized."""
        counts = {}
        for asset in GRAPH:
            records = self.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset.key), limit=1000
            ).records
            counts[asset.key.to_user_string()] = Counter(
                None if r.partition_key is None else str(r.partition_key) for r in records
            )
        return counts


def _pairs(*defacers: str) -> Counter:
    return Counter(f"{d}|{s}" for d in defacers for s in SUBJECTS)


def test_a_new_defacer_materializes_only_its_partitions_and_the_summaries(
    ci_cohort, tmp_path, only_installed_builtins
):
    study = tmp_path / "study"
    study.mkdir()
    # From 5/8 of the way forward: the whole face of both ci subjects, eyes included.
    add_tool(study, "zero_front", 5, 8)
    with DagsterInstance.ephemeral() as instance:
        deployment = Deployment(instance, study_resources(ci_cohort, study))
        # The automation sensor is running before the sensors register anything: eager()
        # requests partitions that became missing since its previous tick, never at the first.
        deployment.settle()
        assert deployment.requested == []

        assert deployment.tick_sensors() == {
            "subjects": SUBJECTS,
            "defacers": ["original", "quickshear", "zero_front"],
        }
        deployment.settle()
        first = deployment.materializations()
        assert first == {
            "raw_scans": Counter(SUBJECTS),
            "defaced_scans": _pairs("original", "quickshear", "zero_front"),
            "qc_labels": _pairs("original", "quickshear", "zero_front"),
            "voxel_ratios": _pairs("original", "quickshear", "zero_front"),
            "study_cohort": Counter([None]),
            "voxel_loss": Counter([None]),
        }, deployment.requested
        cohort = instance.get_latest_materialization_event(AssetKey("study_cohort"))
        assert cohort.asset_materialization.metadata["compared_methods"].value == (
            "original, zero_front"
        ), "quickshear keeps the face of the ci phantoms, so QC fails it"

        deployment.requested.clear()
        add_tool(study, "zero_front_third", 2, 3)
        assert deployment.tick_sensors() == {"defacers": ["zero_front_third"]}
        deployment.settle()
        second = deployment.materializations()
        new = {name: second[name] - first[name] for name in second}
        assert new == {
            "raw_scans": Counter(),
            "defaced_scans": _pairs("zero_front_third"),
            "qc_labels": _pairs("zero_front_third"),
            "voxel_ratios": _pairs("zero_front_third"),
            "study_cohort": Counter([None]),
            "voxel_loss": Counter([None]),
        }, deployment.requested
        cohort = instance.get_latest_materialization_event(AssetKey("study_cohort"))
        assert cohort.asset_materialization.metadata["compared_methods"].value == (
            "original, zero_front, zero_front_third"
        )
        assert deployment.tick_sensors() == {}
        assert (
            evaluate_automation_conditions(
                defs=deployment.defs, instance=instance, cursor=deployment.cursor
            ).total_requested
            == 0
        )
