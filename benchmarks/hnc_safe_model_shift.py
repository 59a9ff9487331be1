"""Does the model trained on original notice hnc_safe? One iteration on an existing study.

Re-defaces every subject with the hnc_safe now in the working tree
(``defaced_scans`` and ``qc_labels``), then runs ``predictions`` and
``segmentation_metrics`` of the cell (trained on original, evaluated on
hnc_safe) with the study's existing original-trained U-Nets, and prints what
the report would say: QC passes, changed volume, Dice per OAR on original and
on hnc_safe scans, and the paired Wilcoxon test of ``study_report``. About 5
minutes on the demo study on 2 cores, against an hour for a full retrain. The
hnc_safe-trained models are not retrained, so the rest of the study is stale
afterwards (run ``make demo`` in a fresh study for the final word).

Usage (in the repository root, for the demo study):
    DAGSTER_HOME=$PWD/demo_study/dagster_home DEFACING_STUDY=demo_study \
    DEFACING_DATA=demo_study/data DEFACING_STORAGE=demo_study/store DEFACING_PROFILE=demo \
    python benchmarks/hnc_safe_model_shift.py [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from dagster import DagsterInstance, MultiPartitionKey
from upath import UPath

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.inference import predictions, segmentation_metrics
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.metadata import latest_metadata
from defacing_assets.assets.qc import qc_labels, study_cohort
from defacing_assets.assets.training import unet_models
from defacing_assets.evaluation.report import original_model_on_defaced
from defacing_assets.orchestration import partition_pool, run_partitions
from defacing_assets.partitions import subjects_partitions
from defacing_assets.resources import study_resources

METHOD = "hnc_safe"


def metrics_of(storage: str, train: str, evaluated: str) -> pd.DataFrame:
    path = UPath(storage) / "segmentation_metrics" / f"eval_defacer={evaluated}"
    return pd.read_parquet(path / f"train_defacer={train}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    instance = DagsterInstance.get()
    resources = study_resources()
    subjects = sorted(instance.get_dynamic_partitions(subjects_partitions.name))
    pairs = [MultiPartitionKey({"subject": s, "defacer": METHOD}) for s in subjects]
    cell = [MultiPartitionKey({"train_defacer": "original", "eval_defacer": METHOD})]
    upstream = [raw_scans, defaced_scans, qc_labels, study_cohort, unet_models]
    started = time.monotonic()
    pool = partition_pool(args.workers)
    try:
        steps = [
            (defaced_scans, pairs, [raw_scans]),
            (qc_labels, pairs, [raw_scans, defaced_scans]),
            (predictions, cell, upstream),
            (segmentation_metrics, cell, [*upstream, predictions]),
        ]
        for asset, keys, inputs in steps:
            failed = [
                k
                for k, ok in run_partitions(instance, asset, keys, resources, inputs, pool)
                if not ok
            ]
            print(
                f"{asset.key.to_user_string()}: {len(keys) - len(failed)} of {len(keys)} ok "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            if failed:
                raise SystemExit(f"failed: {', '.join(failed)}")
    finally:
        if pool is not None:
            pool.shutdown()

    qc = [latest_metadata(instance, qc_labels.key, pair) for pair in pairs]
    defaced = [latest_metadata(instance, defaced_scans.key, pair) for pair in pairs]
    changed_ml = pd.Series([r.get("shell_ml") for r in defaced], dtype=float)
    print(
        f"QC passed {sum(bool(r.get('passed')) for r in qc)} of {len(qc)}; changed ml per "
        f"subject: min {changed_ml.min():.0f}, mean {changed_ml.mean():.0f}, "
        f"max {changed_ml.max():.0f}"
    )
    storage = resources["io_manager"].base_path
    on_original = metrics_of(storage, "original", "original")
    on_method = metrics_of(storage, "original", METHOD)
    both = on_original.merge(on_method, on=["subject", "oar"], suffixes=("_original", "_method"))
    per_oar = both.groupby("oar")[["dice_original", "dice_method"]].mean()
    per_oar["difference"] = per_oar["dice_method"] - per_oar["dice_original"]
    print(per_oar.round(3).to_markdown())
    print(original_model_on_defaced(pd.concat([on_original, on_method])).to_markdown(index=False))


if __name__ == "__main__":
    main()
