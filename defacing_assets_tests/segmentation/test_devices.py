"""Device leases: GPU steps in one run never share a device, and a held device blocks."""

import itertools
import json
import os
import time
from pathlib import Path

import pytest
from dagster import (
    Definitions,
    asset,
    define_asset_job,
    execute_job,
    instance_for_test,
    reconstructable,
)

from defacing_assets.execution import GPU_OP_TAGS, GPU_POOL, default_executor
from defacing_assets.resources import ComputeConfig
from defacing_assets.segmentation.devices import CPU, lease_device

HOLD_S = 3.0
GPU_STEPS = ["train_a", "train_b", "infer_c"]


def _hold_and_record(name: str, compute: ComputeConfig) -> None:
    with lease_device(compute.device_list(), compute.lock_folder()) as lease:
        start = time.time()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        time.sleep(HOLD_S)
        end = time.time()
    record = {"device": lease.device, "visible": visible, "start": start, "end": end}
    (Path(os.environ["LEASE_TEST_DIR"]) / f"{name}.json").write_text(json.dumps(record))


def _gpu_asset(name: str):
    @asset(name=name, op_tags=GPU_OP_TAGS, pool=GPU_POOL)
    def gpu_step(compute: ComputeConfig) -> None:
        _hold_and_record(name, compute)

    return gpu_step


def lease_job():
    """Three GPU-tagged steps under the project's default executor (built in each step process)."""
    folder = Path(os.environ["LEASE_TEST_DIR"])
    return Definitions(
        assets=[_gpu_asset(name) for name in GPU_STEPS],
        jobs=[define_asset_job("lease_job", selection=GPU_STEPS)],
        resources={"compute": ComputeConfig(lock_dir=str(folder / "locks"))},
        executor=default_executor(),
    ).resolve_job_def("lease_job")


def test_gpu_steps_in_one_run_never_hold_the_same_device(tmp_path, monkeypatch):
    # Two fake GPUs: the executor allows two GPU steps at once, the leases pick
    # which device each gets.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("LEASE_TEST_DIR", str(tmp_path))
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = execute_job(reconstructable(lease_job), instance=instance)
        assert result.success
    records = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in GPU_STEPS}
    for record in records.values():
        assert record["device"] in {"0", "1"}
        assert record["visible"] == record["device"], "the step sees only its leased GPU"
    overlapping = 0
    for (a, first), (b, second) in itertools.combinations(records.items(), 2):
        if first["start"] < second["end"] and second["start"] < first["end"]:
            overlapping += 1
            assert first["device"] != second["device"], f"{a} and {b} shared a device"
    assert overlapping, "two GPU slots: the executor ran two GPU steps at once"
    for name, record in records.items():
        concurrent = sum(
            other["start"] < record["end"] and record["start"] < other["end"]
            for other in records.values()
        )
        assert concurrent <= 2, f"{name} ran beside more GPU steps than there are GPUs"


def test_held_device_blocks_a_second_lease_until_released(tmp_path):
    with lease_device(["3"], tmp_path, pin=True) as lease:
        assert lease.device == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        with pytest.raises(TimeoutError, match=r"no free GPU among \['3'\]"):
            with lease_device(["3"], tmp_path, timeout_s=0.3, poll_s=0.1):
                pass
    with lease_device(["3"], tmp_path, timeout_s=0.3) as again:
        assert again.device == "3"


def test_without_gpus_the_lease_is_the_cpu(tmp_path):
    with lease_device([], tmp_path) as lease:
        assert lease.device == CPU and lease.torch_device == CPU
    assert not list(tmp_path.iterdir()), "no lock taken for the CPU"
