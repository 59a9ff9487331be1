"""One GPU per training or inference step, leased with a file lock.

The executor limits how many GPU-tagged steps run at once, but it does not say
which device each gets. A lease picks a free device by taking a per-device
file lock (``filelock``) in a folder shared by all step processes of the
instance (``$DAGSTER_HOME/device_locks``), and pins the step to it through
``CUDA_VISIBLE_DEVICES`` before CUDA is initialised. The lock lives as long
as the lease, and the operating system releases it if the process dies, so a
killed step never leaves a device reserved.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

CPU = "cpu"


def visible_devices() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    configured = os.environ.get("CUDA_VISIBLE_DEVICES")
    if configured is not None:
        return [d.strip() for d in configured.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def default_lock_dir() -> Path:
    """``$DAGSTER_HOME/device_locks``; the temp folder when no instance folder is set."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home or tempfile.gettempdir()) / "device_locks"


@dataclass(frozen=True)
class Lease:
    device: str
    """GPU id as the host numbers it, or ``"cpu"``."""
    torch_device: str
    """What torch should use in the leasing process: ``cuda:0`` (its one visible GPU) or ``cpu``."""


@contextmanager
def lease_device(
    devices: Sequence[str] | None = None,
    lock_dir: str | Path | None = None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 0.5,
    pin: bool = True,
) -> Iterator[Lease]:
    """Hold one free device from ``devices`` (default: :func:`visible_devices`) until exit.

    With no devices the lease is the CPU and takes no lock. With ``pin`` the
    process's ``CUDA_VISIBLE_DEVICES`` is set to the leased id (and restored
    afterwards), so torch sees exactly one GPU as ``cuda:0``.

    Raises:
        TimeoutError: every device stayed busy for ``timeout_s`` seconds.
    """
    devices = list(visible_devices() if devices is None else devices)
    if not devices:
        yield Lease(CPU, CPU)
        return
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    locks = {device: FileLock(str(folder / f"gpu{device}.lock")) for device in devices}
    deadline = time.monotonic() + timeout_s
    held: str | None = None
    while held is None:
        for device, lock in locks.items():
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            held = device
            break
        if held is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no free GPU among {devices} after {timeout_s:.0f} s (locks in {folder})"
                )
            time.sleep(poll_s)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        if pin:
            os.environ["CUDA_VISIBLE_DEVICES"] = held
        yield Lease(held, "cuda:0" if pin else f"cuda:{held}")
    finally:
        if pin:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
        locks[held].release()
