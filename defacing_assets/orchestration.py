"""Running the asset graph from the command line (``defacing-assets demo``).

Uses the instance under ``DAGSTER_HOME``, so what the demo materializes is
what ``dagster dev`` shows, and a second run reuses it: only partitions that
are not materialized yet are run. Each partition is one run, and runs go to a
pool of worker processes, one per core, each with one thread for torch and
ITK: defacing, QC and inference are mostly single-threaded, so on 2 cores
the pool halves their wall time, and two single-threaded trainings side by
side beat one two-threaded training (0.056 against 0.070 s per iteration of
the demo U-Net; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import pandas as pd
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    MultiPartitionKey,
    materialize,
)

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.graph import STUDY_ASSETS
from defacing_assets.assets.inference import predictions, segmentation_metrics
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.metadata import latest_metadata
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.assets.reporting import stats_tables, study_report
from defacing_assets.assets.training import unet_models
from defacing_assets.partitions import N_FOLDS, defacers_partitions, subjects_partitions
from defacing_assets.resources import study_resources
from defacing_assets.sensors import new_valid_subjects
from defacing_assets.workers import materialize_in_worker, start_worker

_log = logging.getLogger("defacing_assets")
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_SILENT = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
"""For the summaries: they read every train x evaluation cell, and Dagster warns about each
cell of a method that was never compared (not materialized, by design)."""


def _materialize_partition(
    asset: AssetsDefinition,
    key: str,
    upstream: list[AssetsDefinition],
    instance: DagsterInstance,
    resources: dict,
) -> bool:
    """One run of one partition, reading upstream from storage; False if it failed."""
    return materialize(
        [asset, *upstream],
        selection=[asset.key],
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config=_QUIET,
    ).success


@functools.cache
def _worker_instance() -> DagsterInstance:
    return DagsterInstance.get()


def materialize_partition_by_name(asset_name: str, key: str, upstream_names: list[str]) -> bool:
    """:func:`_materialize_partition` from names, as a pool worker gets it."""
    by_name = {asset.key.to_user_string(): asset for asset in STUDY_ASSETS}
    return _materialize_partition(
        by_name[asset_name],
        key,
        [by_name[name] for name in upstream_names],
        _worker_instance(),
        study_resources(),
    )


def partition_pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes for partition runs (spawned: torch and ITK threads do not survive fork)."""
    if workers < 2:
        return None
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_worker,
        initargs=(max(1, _cores() // workers),),
    )


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_partitions(
    instance: DagsterInstance,
    asset: AssetsDefinition,
    keys: list[str],
    resources: dict,
    upstream: list[AssetsDefinition],
    pool: Executor | None,
) -> Iterator[tuple[str, bool]]:
    """(key, success) as each partition's run ends, in the pool when there is one."""
    if pool is None or len(keys) < 2:
        for key in keys:
            yield key, _materialize_partition(asset, key, upstream, instance, resources)
        return
    names = [a.key.to_user_string() for a in upstream]
    futures = {
        pool.submit(materialize_in_worker, asset.key.to_user_string(), str(key), names): key
        for key in keys
    }
    for future in as_completed(futures):
        try:
            success = future.result()
        except Exception as error:  # a worker that died: the partition failed, the rest go on
            _log.error(
                "%s %s: worker failed: %s", asset.key.to_user_string(), futures[future], error
            )
            success = False
        yield futures[future], success


def materialize_missing(
    instance: DagsterInstance,
    asset: AssetsDefinition,
    keys: list[str],
    resources: dict,
    upstream: list[AssetsDefinition],
    pool: Executor | None = None,
) -> list[str]:
    """One run per partition not materialized yet; returns the keys whose run failed."""
    done = instance.get_materialized_partitions(asset.key)
    missing = [key for key in keys if key not in done]
    started, failed = time.monotonic(), []
    runs = run_partitions(instance, asset, missing, resources, upstream, pool)
    for count, (key, success) in enumerate(runs, start=1):
        if not success:
            failed.append(key)
        elapsed = time.monotonic() - started
        eta = elapsed / count * (len(missing) - count)
        print(
            f"{asset.key.to_user_string()} {count}/{len(missing)} {key} "
            f"{'ok' if success else 'FAILED'} ({elapsed:.0f}s, ETA {eta:.0f}s)",
            flush=True,
        )
    return failed


def materialize_summaries(
    instance: DagsterInstance, summaries: list[AssetsDefinition], resources: dict
) -> None:
    """One run of unpartitioned summary assets, reading everything upstream from storage."""
    result = materialize(
        STUDY_ASSETS,
        selection=summaries,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config=_SILENT,
    )
    names = ", ".join(asset.key.to_user_string() for asset in summaries)
    print(f"{names} {'ok' if result.success else 'FAILED'}", flush=True)


def register_partitions(instance: DagsterInstance, resources: dict) -> None:
    """What the two sensors do each tick, done once: new subjects and defacers."""
    study = resources["study"]
    existing = set(instance.get_dynamic_partitions(subjects_partitions.name))
    new = new_valid_subjects(study, existing, _log)
    if new:
        instance.add_dynamic_partitions(subjects_partitions.name, new)
    known = set(instance.get_dynamic_partitions(defacers_partitions.name))
    ready = [
        name
        for name, entry in sorted(study.defacers().items())
        if name not in known and entry.defacer.available()[0]
    ]
    if ready:
        instance.add_dynamic_partitions(defacers_partitions.name, ready)


@dataclass
class StudyRun:
    summaries: list[tuple[str, str]]
    """Titled summaries to print."""
    failed_models: list[str] = field(default_factory=list)
    """One entry per model that failed its training run or its quality gate, with the reason."""


def run_demo_study(workers: int | None = None) -> StudyRun:
    """Materialize every missing partition of the graph; return summaries and failed models.

    ``workers``: processes for partition runs (default: one per core).
    """
    pool = partition_pool(_cores() if workers is None else workers)
    try:
        return _run_study(pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _run_study(pool: Executor | None) -> StudyRun:
    instance = DagsterInstance.get()
    resources = study_resources()
    register_partitions(instance, resources)
    subjects = sorted(instance.get_dynamic_partitions(subjects_partitions.name))
    defacers = sorted(instance.get_dynamic_partitions(defacers_partitions.name))
    materialize_missing(instance, raw_scans, subjects, resources, [], pool)
    pairs = [MultiPartitionKey({"subject": s, "defacer": d}) for d in defacers for s in subjects]
    materialize_missing(instance, defaced_scans, pairs, resources, [raw_scans], pool)
    for asset in (qc_labels, voxel_ratios):
        materialize_missing(instance, asset, pairs, resources, [raw_scans, defaced_scans], pool)
    materialize_summaries(instance, [study_cohort, voxel_loss], resources)
    cohort = latest_metadata(instance, study_cohort.key, None)
    compared = [m for m in cohort.get("compared_methods", "").split(", ") if m]
    model_keys = [
        MultiPartitionKey({"fold": str(fold), "defacer": method})
        for method in compared
        for fold in range(N_FOLDS)
    ]
    usable = cohort.get("usable_subjects", 0)
    failed_training: list[str] = []
    if usable >= N_FOLDS:
        upstream = [raw_scans, defaced_scans, qc_labels, study_cohort]
        failed_training = materialize_missing(
            instance, unet_models, model_keys, resources, upstream, pool
        )
        cells = [
            MultiPartitionKey({"train_defacer": trained, "eval_defacer": evaluated})
            for trained in compared
            for evaluated in compared
        ]
        materialize_missing(instance, predictions, cells, resources, [*upstream, unet_models], pool)
        upstream = [*upstream, unet_models, predictions]
        materialize_missing(instance, segmentation_metrics, cells, resources, upstream, pool)
        materialize_summaries(instance, [stats_tables, study_report], resources)
    else:
        print(
            f"unet_models skipped: {N_FOLDS}-fold training needs {N_FOLDS} usable subjects, "
            f"the cohort has {usable}",
            flush=True,
        )

    ingest_rows = []
    for subject in subjects:
        metadata = latest_metadata(instance, raw_scans.key, subject)
        voxels = metadata.get("voxels_per_oar", {})
        ingest_rows.append(
            {
                "subject": subject,
                "modality": metadata.get("modality", "?"),
                "shape": metadata.get("shape", "not materialized"),
                "spacing_mm": metadata.get("spacing_mm", ""),
                "OARs present": sum(1 for n in voxels.values() if n),
            }
        )

    def records(asset: AssetsDefinition, defacer: str) -> list[dict]:
        return [
            latest_metadata(instance, asset.key, pair)
            for pair in pairs
            if pair.keys_by_dimension["defacer"] == defacer
        ]

    defacing_rows = []
    for defacer in defacers:
        defaced = records(defaced_scans, defacer)
        ok = [r for r in defaced if r.get("status") == "ok"]
        defacing_rows.append(
            {
                "defacer": defacer,
                "ok": len(ok),
                "failed": sum(r.get("status") == "failed" for r in defaced),
                "mean % voxels changed": round(
                    sum(r["percent_voxels_changed"] for r in ok) / max(len(ok), 1), 2
                ),
                "mean seconds": round(
                    sum(r.get("seconds", 0) for r in defaced) / max(len(defaced), 1), 2
                ),
            }
        )
    loss = latest_metadata(instance, voxel_loss.key, None)
    stats = latest_metadata(instance, stats_tables.key, None)
    report = latest_metadata(instance, study_report.key, None)
    qc_rows = []
    for defacer in defacers:
        verdicts = records(qc_labels, defacer)
        qc_rows.append(
            {
                "defacer": defacer,
                "QC passed": sum(bool(r.get("passed")) for r in verdicts),
                "of": len(verdicts),
            }
        )
    model_rows, failed_models = [], []
    for key in model_keys:
        metadata = latest_metadata(instance, unet_models.key, key)
        name = f"{key.keys_by_dimension['defacer']} fold {key.keys_by_dimension['fold']}"
        status = metadata.get("status", "-")
        if key in failed_training:
            status = "training run failed (its log in the UI says why)"
            failed_models.append(f"{name}: {status}")
        elif status.startswith("failed"):
            failed_models.append(f"{name}: {status.removeprefix('failed: ')}")
        model_rows.append(
            {
                "defacer": key.keys_by_dimension["defacer"],
                "fold": key.keys_by_dimension["fold"],
                "epochs": metadata.get("epochs", "-"),
                "best epoch": metadata.get("best_epoch", "-"),
                "val Dice at best": round(metadata.get("val_dice_at_best", float("nan")), 3),
                "precision": metadata.get("precision", "-"),
                "quality": status,
                "minutes": round(metadata.get("seconds", 0) / 60, 1),
            }
        )
    models = pd.DataFrame(model_rows)
    dice_by_method = (
        models.groupby("defacer")["val Dice at best"].mean().round(3).to_dict()
        if len(models)
        else {}
    )
    summaries = [
        ("Subjects (raw_scans)", pd.DataFrame(ingest_rows).to_string(index=False)),
        ("Defacing (defaced_scans)", pd.DataFrame(defacing_rows).to_string(index=False)),
        ("Face QC (qc_labels)", pd.DataFrame(qc_rows).to_string(index=False)),
        (
            "Study cohort (study_cohort)",
            f"{cohort.get('usable_subjects', 0)} usable subjects; compared methods: "
            f"{cohort.get('compared_methods', '-')}",
        ),
        (
            "Table 1: OARs completely removed after successful defacing (voxel_loss)",
            loss.get("table1", "voxel_loss not materialized"),
        ),
        ("Figure 2: kept-voxel ratio per OAR", loss.get("figure2_path", "-")),
        (
            "U-Nets (unet_models): mean validation Dice over the 8 OARs at training resolution",
            (models.to_string(index=False) if len(models) else "no models")
            + f"\nmean over folds (nan: not trained): {dice_by_method}",
        ),
        (
            "Table 2: composite Dice, mean (SD), trained on (rows) x evaluated on (columns)",
            stats.get("table2", "stats_tables not materialized"),
        ),
        ("Main effects (study_report)", report.get("main_effects", "-")),
        ("Report", report.get("report", "study_report not materialized")),
    ]
    return StudyRun(summaries, failed_models)
