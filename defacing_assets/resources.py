"""Resources: the study's configuration, chosen per environment in one place.

Asset bodies never read the environment: :func:`study_resources` does, once,
when the Definitions are built (``DEFACING_STUDY``, ``DEFACING_DATA``, ``DEFACING_PROFILE``,
``DEFACING_SEED``, ``DEFACING_STORAGE``, ``DEFACING_DEVICES``, ``DEFACING_SCRATCH``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

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
        label_policy: what a model trained on defaced images learns: ``original``
            (the full annotation, as the study) or ``kept`` (only voxels the defacer kept).
        reference_policy: what a prediction on method m's images is scored against:
            ``kept`` (the annotation restricted to voxels m kept, as the study) or
            ``original`` (the full annotation).
        min_cases: an OAR with fewer (subject) cases in a per-OAR comparison is dropped
            from it, and the tables say so (the study dropped level III: 1 and 2 cases).
        min_model_dice: the model quality gate's floor on validation Dice; negative = the
            profile's ``min_val_dice`` (paper 0.5, demo 0.3).
    """

    data_root: str = DEFAULT_DATA
    study_dir: str = DEFAULT_STUDY
    profile: str = "demo"
    seed: int = 0
    roi_names: dict[str, int] = {}
    compared_methods: list[str] = []
    label_policy: Literal["original", "kept"] = "original"
    reference_policy: Literal["kept", "original"] = "kept"
    min_cases: int = 5
    min_model_dice: float = -1.0

    def model_dice_floor(self) -> float:
        """The quality gate's floor: ``min_model_dice`` when set, else the profile's."""
        if self.min_model_dice >= 0:
            return self.min_model_dice
        return get_profile(self.profile).min_val_dice

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


class ComputeConfig(ConfigurableResource):
    """Where GPU steps run and keep scratch files.

    Attributes:
        devices: GPU ids to lease from; empty = ``CUDA_VISIBLE_DEVICES`` or every CUDA device.
        lock_dir: device locks, shared by every step process of the instance;
            empty = ``$DAGSTER_HOME/device_locks``.
        scratch_dir: training checkpoints and the pre-processing cache. Retries
            resume from here, so on Kubernetes point it at a shared volume.
    """

    devices: list[str] = []
    lock_dir: str = ""
    scratch_dir: str = f"{DEFAULT_STUDY}/scratch"

    def device_list(self) -> list[str] | None:
        return list(self.devices) or None

    def lock_folder(self) -> Path | None:
        return Path(self.lock_dir) if self.lock_dir else None


def study_resources() -> dict:
    """All resources for one environment, from environment variables with local defaults."""
    from defacing_assets.storage import (
        DefacedScanStore,
        ModelStore,
        PredictionStore,
        ScanStore,
        TableStore,
    )

    storage = os.environ.get("DEFACING_STORAGE", DEFAULT_STORAGE)
    study_dir = os.environ.get("DEFACING_STUDY", DEFAULT_STUDY)
    devices = os.environ.get("DEFACING_DEVICES", "")
    return {
        "study": StudyConfig(
            data_root=os.environ.get("DEFACING_DATA", DEFAULT_DATA),
            study_dir=study_dir,
            profile=os.environ.get("DEFACING_PROFILE", "demo"),
            seed=int(os.environ.get("DEFACING_SEED", "0")),
        ),
        "scan_io_manager": ScanStore(base_path=storage),
        "defaced_io_manager": DefacedScanStore(base_path=storage),
        "io_manager": TableStore(base_path=storage),
        "model_io_manager": ModelStore(base_path=storage),
        "prediction_io_manager": PredictionStore(base_path=storage),
        "compute": ComputeConfig(
            devices=[d.strip() for d in devices.split(",") if d.strip()],
            scratch_dir=os.environ.get("DEFACING_SCRATCH", f"{study_dir}/scratch"),
        ),
    }
