"""Resources: the study's configuration, chosen per environment in one place.

Asset bodies never read the environment: :func:`study_resources` does, once,
when the Definitions are built (``DEFACING_STUDY``, ``DEFACING_DATA``, ``DEFACING_PROFILE``,
``DEFACING_SEED``, ``DEFACING_STORAGE``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource

from defacing_assets.cohort.sources import SubjectSource, discover_subjects
from defacing_assets.defacers.registry import DEFACERS_FILE, RegisteredDefacer, registry
from defacing_assets.profiles import get_profile

DEFAULT_STUDY = "demo_study"
DEFAULT_DATA = f"{DEFAULT_STUDY}/data"
DEFAULT_STORAGE = ".defacing_store"


class StudyConfig(ConfigurableResource):
    """Where the scans are and how the study is sized.

    Attributes:
        data_root: folder (see ``cohort.sources`` for the accepted layouts).
        study_dir: the study folder, holding ``defacers.yaml`` (user-added tools).
        profile: ``paper``, ``demo`` or ``ci``.
        seed: seeds the synthetic cohort and, later, folds and training.
        roi_names: site-specific ROI name -> label (1..8), over the built-in matching.
        compared_methods: defacers the cohort must pass; empty = every method that
            passed QC at least once (as the study did).
    """

    data_root: str = DEFAULT_DATA
    study_dir: str = DEFAULT_STUDY
    profile: str = "demo"
    seed: int = 0
    roi_names: dict[str, int] = {}
    compared_methods: list[str] = []

    def subject_sources(self) -> tuple[list[SubjectSource], list[str]]:
        return discover_subjects(self.data_root)

    def source_for(self, subject_id: str) -> SubjectSource:
        sources, _ = self.subject_sources()
        for source in sources:
            if source.subject_id == subject_id:
                return source
        raise FileNotFoundError(f"{self.data_root}: no subject {subject_id!r} in the data folder")

    def validated_profile(self) -> str:
        return get_profile(self.profile).name

    def defacers(self) -> dict[str, RegisteredDefacer]:
        """The registry as this study sees it (built-ins, plugins, its defacers.yaml)."""
        return registry(Path(self.study_dir) / DEFACERS_FILE)


def study_resources() -> dict:
    """All resources for one environment, from environment variables with local defaults."""
    from defacing_assets.storage import DefacedScanStore, ScanStore, TableStore

    storage = os.environ.get("DEFACING_STORAGE", DEFAULT_STORAGE)
    return {
        "study": StudyConfig(
            data_root=os.environ.get("DEFACING_DATA", DEFAULT_DATA),
            study_dir=os.environ.get("DEFACING_STUDY", DEFAULT_STUDY),
            profile=os.environ.get("DEFACING_PROFILE", "demo"),
            seed=int(os.environ.get("DEFACING_SEED", "0")),
        ),
        "scan_io_manager": ScanStore(base_path=storage),
        "defaced_io_manager": DefacedScanStore(base_path=storage),
        "io_manager": TableStore(base_path=storage),
    }
