"""GPU routing: op tags, the default executor, and retries for training and inference.

Steps tagged ``defacing/resource: gpu`` are limited by the multiprocess
executor to one per visible GPU (one on a CPU-only machine), belong to the
``gpu`` pool (a run-spanning limit set with ``dagster instance concurrency``),
and carry a ``dagster-k8s/config`` tag so ``k8s_job_executor`` gives each pod
one GPU on a GPU node. Which GPU a step uses is decided by its device lease
(``segmentation.devices``).

``DEFACING_EXECUTOR`` picks the executor: ``multiprocess`` (the default, one
machine) or ``k8s`` (``dagster_k8s.k8s_job_executor``: one pod per step, from
the ``deploy`` extra, imported only when chosen).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from dagster import Backoff, ExecutorDefinition, Jitter, RetryPolicy, multiprocess_executor

from defacing_assets.resources import ComputeConfig
from defacing_assets.segmentation.devices import lease_device, visible_devices

GPU_TAG_KEY = "defacing/resource"
GPU_TAG_VALUE = "gpu"
GPU_POOL = "gpu"

EXECUTOR_ENV = "DEFACING_EXECUTOR"
EXECUTORS = ("multiprocess", "k8s")

K8S_GPU_CONFIG = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

GPU_OP_TAGS = {GPU_TAG_KEY: GPU_TAG_VALUE, "dagster-k8s/config": K8S_GPU_CONFIG}

GPU_RETRY = RetryPolicy(
    max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
"""Transient failures (a lost device, a full disk, a preempted node); training resumes
from its last checkpoint, so a retry costs at most one epoch."""


def gpu_slots() -> int:
    """GPU steps that may run at once: the GPUs seen, at least one."""
    return max(1, len(visible_devices()))


def executor_kind(kind: str | None = None) -> str:
    """``kind``, else ``DEFACING_EXECUTOR``, else ``multiprocess``; refuses unknown names."""
    chosen = (kind or os.environ.get(EXECUTOR_ENV) or "multiprocess").strip().lower()
    if chosen not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={chosen!r}: expected one of {', '.join(EXECUTORS)}")
    return chosen


def default_executor(
    max_concurrent: int | None = None, kind: str | None = None
) -> ExecutorDefinition:
    """The executor of every job, chosen by :func:`executor_kind`.

    ``multiprocess``: GPU-tagged steps limited to :func:`gpu_slots` on this machine.
    ``k8s``: every step its own pod, configured like the run's pod by the
    K8sRunLauncher; GPU steps get a GPU node through their ``dagster-k8s/config``
    tag and wait for a slot of the instance's ``gpu`` pool.
    """
    if executor_kind(kind) == "k8s":
        return _k8s_executor(max_concurrent)
    config: dict = {
        "tag_concurrency_limits": [
            {"key": GPU_TAG_KEY, "value": GPU_TAG_VALUE, "limit": gpu_slots()}
        ]
    }
    if max_concurrent is not None:
        config["max_concurrent"] = max_concurrent
    return multiprocess_executor.configured(config, name="gpu_aware_multiprocess")


def _k8s_executor(max_concurrent: int | None) -> ExecutorDefinition:
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as error:
        raise ImportError(
            f"{EXECUTOR_ENV}=k8s needs dagster-k8s, which is in the deploy extra: "
            "pip install 'defacing-assets[deploy]'"
        ) from error
    if max_concurrent is None:
        return k8s_job_executor
    return k8s_job_executor.configured({"max_concurrent": max_concurrent}, name="k8s")


@contextmanager
def leased_torch_device(compute: ComputeConfig, log: Callable[[str], object]) -> Iterator[str]:
    """The torch device of this GPU step, held for the ``with`` block; ``cpu`` without CUDA."""
    with lease_device(compute.device_list(), compute.lock_folder()) as lease:
        device = lease.torch_device if torch.cuda.is_available() else "cpu"
        log(f"device {device} (lease {lease.device})")
        yield device
