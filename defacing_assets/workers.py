"""What runs first in the demo's pool of worker processes.

Apart from :mod:`defacing_assets.orchestration` so that a spawned worker sets
its warning filters and thread counts before it imports Dagster and the
assets; the command line quiets the same warnings.
"""

from __future__ import annotations

import warnings


def quiet_warnings() -> None:
    """Hide Dagster's beta notices and libraries' FutureWarnings from the user's terminal."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is currently in beta")


def start_worker(threads: int) -> None:
    """Pool initializer: share the cores between workers instead of oversubscribing them."""
    quiet_warnings()
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def materialize_in_worker(asset_name: str, key: str, upstream_names: list[str]) -> bool:
    """One partition's run in this worker; False if it failed."""
    from defacing_assets.orchestration import materialize_partition_by_name

    return materialize_partition_by_name(asset_name, key, upstream_names)
