"""IO managers: every stored result under one base path, local or fsspec URL.

Layout ``<base>/<asset>/<dimension>=<key>/.../<file>``. Writes are atomic: a
partition is written to a temporary folder and renamed into place, so a killed
or failed step never leaves a half-written partition and never damages the
one already stored; on local disks the files and folders are fsynced around the rename
(``imaging/atomic.py``), so it survives a power cut too. Each manager also says which
of a partition's files are missing (:func:`missing_stored_files`), for the
``stored_files`` asset check and for steps that skip work already stored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, ClassVar

import pandas as pd
from dagster import (
    AssetKey,
    ConfigurableIOManagerFactory,
    InputContext,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    OutputContext,
    PartitionsDefinition,
    UPathIOManager,
)
from upath import UPath

from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.imaging.atomic import atomic_directory, atomic_write_bytes
from defacing_assets.imaging.io import volume_from_bytes, volume_to_bytes
from defacing_assets.partitions import DIMENSION_NAMES
from defacing_assets.segmentation.infer import CohortPredictions
from defacing_assets.segmentation.train import (
    MODEL_FILES,
    TrainingResult,
    load_model,
    save_model,
)


def _partition_folder(
    definition: PartitionsDefinition | None, path: UPath, partition: str
) -> UPath:
    if isinstance(definition, MultiPartitionsDefinition):
        # UPathIOManager joins the keys with "/" in sorted dimension order;
        # ids are validated to contain no "/".
        dimensions = sorted(d.name for d in definition.partitions_defs)
        parts = [f"{d}={key}" for d, key in zip(dimensions, partition.split("/"), strict=True)]
    else:
        name = DIMENSION_NAMES.get(getattr(definition, "name", None) or "", "partition")
        parts = [f"{name}={partition}"]
    return path.joinpath(*parts)


class _PartitionFolders(UPathIOManager):
    """Names partition folders ``<dimension>=<key>`` instead of bare keys."""

    required_files: ClassVar[tuple[str, ...]] = ()
    """Files every stored partition folder holds (empty: the path itself is the file)."""

    def get_path_for_partition(
        self, context: InputContext | OutputContext, path: UPath, partition: str
    ) -> UPath:
        return _partition_folder(context.asset_partitions_def, path, partition)

    def partition_path(
        self, asset_key: AssetKey, definition: PartitionsDefinition, partition_key: str
    ) -> UPath:
        """Where a partition of ``asset_key`` is stored: the path a write uses, without
        an IO context (for checks that compare the store with Dagster's records)."""
        if isinstance(definition, MultiPartitionsDefinition):
            key: MultiPartitionKey = definition.get_partition_key_from_str(str(partition_key))
            partition = "/".join(v for _, v in sorted(key.keys_by_dimension.items()))
        else:
            partition = str(partition_key)
        folder = _partition_folder(definition, self._base_path.joinpath(*asset_key.path), partition)
        return self._with_extension(folder)

    def missing_files(self, path: UPath) -> list[UPath]:
        """The files of the partition stored at ``path`` that are not there (or, for a
        JSON record that lists more files, not readable)."""
        if not self.required_files:
            return [] if path.exists() else [path]
        return [path / name for name in self.required_files if not (path / name).exists()]


def _record(file: UPath) -> dict | None:
    """A stored JSON record, or None when it is damaged (it then counts as missing)."""
    try:
        record = json.loads(file.read_text())
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class LazyPartitions(Mapping):
    """Partition key -> stored object, read when accessed and not kept.

    A training step reads one volume per cohort subject; holding them all at
    the paper's resolution would take many GB, so each is loaded on access.
    """

    def __init__(self, loaders: dict[str, Callable[[], Any]]) -> None:
        self._loaders = loaders

    def __getitem__(self, key: str) -> Any:
        return self._loaders[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


class _LazyLoading(_PartitionFolders):
    """Several partitions, or an input annotated :class:`LazyPartitions`, load lazily;
    a missing partition fails when accessed, naming it."""

    def load_partitions(self, context: InputContext):
        keys = context.asset_partition_keys
        paths = self._get_paths_for_partitions(context)
        wants_mapping = getattr(context.dagster_type, "typing_type", None) is LazyPartitions
        if len(keys) == 1 and not wants_mapping:
            return self._read(paths[keys[0]], keys[0], context)
        return LazyPartitions({key: partial(self._read, paths[key], key, context) for key in keys})

    def _read(self, path: UPath, key: str, context: InputContext) -> Any:
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} partition {key} is not stored ({path})"
            )
        return self.load_from_path(context, path)


class ScanIOManager(_LazyLoading):
    """A :class:`Scan` as a folder: ``image.nii.gz``, ``labels.nii.gz``, ``scan.json``."""

    required_files = ("scan.json", "image.nii.gz")

    def dump_to_path(self, context: OutputContext, obj: Scan, path: UPath) -> None:
        with atomic_directory(path) as staging:
            (staging / "image.nii.gz").write_bytes(volume_to_bytes(obj.image))
            if obj.labels is not None:
                (staging / "labels.nii.gz").write_bytes(volume_to_bytes(obj.labels))
            record = {
                "subject_id": obj.subject_id,
                "modality": obj.modality,
                "landmarks": obj.landmarks,
                "absent_structures": obj.absent_structures,
                "source": obj.source,
            }
            (staging / "scan.json").write_text(json.dumps(record, indent=1, sort_keys=True))

    def load_from_path(self, context: InputContext, path: UPath) -> Scan:
        record = json.loads((path / "scan.json").read_text())
        image = volume_from_bytes((path / "image.nii.gz").read_bytes(), str(path / "image.nii.gz"))
        label_path = path / "labels.nii.gz"
        labels = (
            volume_from_bytes(label_path.read_bytes(), str(label_path))
            if label_path.exists()
            else None
        )
        return Scan(
            record["subject_id"],
            image,
            labels,
            record["modality"],
            record["landmarks"],
            record["absent_structures"],
            record["source"],
        )


class DefacedScanIOManager(_LazyLoading):
    """A :class:`DefacingResult` as ``image.nii.gz``, ``kept_mask.nii.gz``, ``result.json``.

    A failed method stores only ``result.json`` (status and reason): failure is data.
    """

    required_files = ("result.json",)

    def missing_files(self, path: UPath) -> list[UPath]:
        missing = super().missing_files(path)
        if missing:
            return missing
        record = _record(path / "result.json")
        if record is None:
            return [path / "result.json"]
        status = record.get("status")
        volumes = [path / "image.nii.gz", path / "kept_mask.nii.gz"]
        if status == "ok" or any(volume.exists() for volume in volumes):
            missing += [volume for volume in volumes if not volume.exists()]
        return missing

    def dump_to_path(self, context: OutputContext, obj: DefacingResult, path: UPath) -> None:
        with atomic_directory(path) as staging:
            if obj.image is not None:
                (staging / "image.nii.gz").write_bytes(volume_to_bytes(obj.image))
                (staging / "kept_mask.nii.gz").write_bytes(volume_to_bytes(obj.kept_mask))
            (staging / "result.json").write_text(json.dumps(obj.record(), indent=1, sort_keys=True))

    def load_from_path(self, context: InputContext, path: UPath) -> DefacingResult:
        record = json.loads((path / "result.json").read_text())
        image = kept = None
        if (path / "image.nii.gz").exists():
            image = volume_from_bytes(
                (path / "image.nii.gz").read_bytes(), str(path / "image.nii.gz")
            )
            mask_path = path / "kept_mask.nii.gz"
            kept = volume_from_bytes(mask_path.read_bytes(), str(mask_path))
        return DefacingResult(image=image, kept_mask=kept, **record)


class TableIOManager(_PartitionFolders):
    """pandas DataFrames as Parquet (pyarrow)."""

    extension = ".parquet"

    def dump_to_path(self, context: OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        buffer = io.BytesIO()
        obj.to_parquet(buffer, engine="pyarrow", index=False)
        atomic_write_bytes(path, buffer.getvalue())

    def load_from_path(self, context: InputContext, path: UPath) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(path.read_bytes()), engine="pyarrow")


class PredictionIOManager(_PartitionFolders):
    """Predictions as ``<subject>.nii.gz`` label maps plus ``folds.json`` and
    ``model_failures.json`` (subjects whose fold's model failed its quality gate)."""

    required_files = ("folds.json",)

    def missing_files(self, path: UPath) -> list[UPath]:
        missing = super().missing_files(path)
        if missing:
            return missing
        folds = _record(path / "folds.json")
        failures_file = path / "model_failures.json"
        failures = _record(failures_file) if failures_file.exists() else {}
        if folds is None or failures is None:
            return [path / "folds.json" if folds is None else failures_file]
        files = [path / f"{subject}.nii.gz" for subject in sorted(set(folds) - set(failures))]
        return [file for file in files if not file.exists()]

    def dump_to_path(self, context: OutputContext, obj: CohortPredictions, path: UPath) -> None:
        with atomic_directory(path) as staging:
            for subject, labels in obj.labels.items():
                (staging / f"{subject}.nii.gz").write_bytes(volume_to_bytes(labels))
            for name, mapping in (("folds", obj.folds), ("model_failures", obj.model_failures)):
                (staging / f"{name}.json").write_text(json.dumps(mapping, indent=1, sort_keys=True))

    def load_from_path(self, context: InputContext, path: UPath) -> CohortPredictions:
        folds = json.loads((path / "folds.json").read_text())
        failures_file = path / "model_failures.json"
        failures = json.loads(failures_file.read_text()) if failures_file.exists() else {}
        labels = {}
        for subject in set(folds) - set(failures):
            file = path / f"{subject}.nii.gz"
            labels[subject] = volume_from_bytes(file.read_bytes(), str(file))
        return CohortPredictions(labels, {s: int(f) for s, f in folds.items()}, failures)


class ModelIOManager(_LazyLoading):
    """A trained model as ``model.pt``, ``config.json`` and ``history.parquet``."""

    required_files = MODEL_FILES

    def dump_to_path(self, context: OutputContext, obj: TrainingResult, path: UPath) -> None:
        with atomic_directory(path) as staging:
            save_model(staging, obj)

    def load_from_path(self, context: InputContext, path: UPath) -> TrainingResult:
        return load_model(path)


def missing_stored_files(
    manager: object, asset_key: AssetKey, definition: PartitionsDefinition, partition_key: str
) -> list[UPath] | None:
    """The missing files of a stored partition, ``[]`` when all are there, or ``None``
    when ``manager`` is not one of these stores and cannot tell."""
    if not isinstance(manager, _PartitionFolders):
        return None
    return manager.missing_files(manager.partition_path(asset_key, definition, partition_key))


class _Store(ConfigurableIOManagerFactory):
    """An IO manager rooted at ``base_path`` (a folder or an fsspec URL such as ``s3://``)."""

    base_path: str
    manager_class: ClassVar[type[UPathIOManager]]

    def create_io_manager(self, context) -> UPathIOManager:
        return self.manager_class(base_path=UPath(self.base_path))


class ScanStore(_Store):
    """Ingested scans."""

    manager_class = ScanIOManager


class DefacedScanStore(_Store):
    """Defacing results."""

    manager_class = DefacedScanIOManager


class TableStore(_Store):
    """Tables (Parquet)."""

    manager_class = TableIOManager


class ModelStore(_Store):
    """Trained models."""

    manager_class = ModelIOManager


class PredictionStore(_Store):
    """Predicted label maps."""

    manager_class = PredictionIOManager
