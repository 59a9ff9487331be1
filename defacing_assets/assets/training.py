"""unet_models: one U-Net per cross-validation fold and training method, on a leased GPU."""

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AutomationCondition,
    DimensionPartitionMapping,
    Failure,
    IdentityPartitionMapping,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionMapping,
    Output,
    asset,
)

from defacing_assets.assets.metadata import latest_metadata, png_metadata
from defacing_assets.cohort.labels import OAR_LABELS
from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.evaluation.cohort import fold_roles
from defacing_assets.evaluation.plots import loss_curves
from defacing_assets.execution import GPU_OP_TAGS, GPU_POOL, GPU_RETRY, leased_torch_device
from defacing_assets.partitions import N_FOLDS, fold_defacer_partitions
from defacing_assets.profiles import get_profile
from defacing_assets.resources import ComputeConfig, StudyConfig
from defacing_assets.segmentation.data import DIGEST, make_subject
from defacing_assets.segmentation.precision import choose_precision, record_training_failure
from defacing_assets.segmentation.quality import quality_record
from defacing_assets.segmentation.train import NonFiniteTrainingError, TrainingResult, train_model
from defacing_assets.storage import LazyPartitions, missing_stored_files

ALL_SUBJECTS_OF_METHOD = MultiPartitionMapping(
    {
        "subject": DimensionPartitionMapping("fold", AllPartitionMapping()),
        "defacer": DimensionPartitionMapping("defacer", IdentityPartitionMapping()),
    }
)
"""A (fold, method) model reads the method's defaced scans of every subject."""

MODEL_QUALITY = "model_quality"


def is_compared(context: AssetExecutionContext, cohort: pd.DataFrame, method: str) -> bool:
    """Whether ``method`` is in the study's comparison; logs why not (the step then skips)."""
    compared = cohort.attrs.get("compared_methods", [])
    if method not in compared:
        context.log.warning(
            f"{method} is not a compared method ({', '.join(compared)}): skipped; name it in "
            "StudyConfig.compared_methods to include it anyway"
        )
    return method in compared


def cohort_members(cohort: pd.DataFrame, fold: int) -> dict[str, list[str]]:
    """Training and validation subjects of cross-validation iteration ``fold``."""
    roles = fold_roles(fold, N_FOLDS)
    return {
        role: sorted(cohort.loc[cohort["fold"].isin(roles[role]), "subject"])
        for role in ("train", "validation")
    }


def _training_subject(
    subject: str,
    method: str,
    raw_scans: Mapping[str, Scan],
    defaced_scans: Mapping[str, DefacingResult],
    study: StudyConfig,
    cache_dir: Path,
):
    defaced = defaced_scans[MultiPartitionKey({"subject": subject, "defacer": method})]
    if defaced.status != "ok" or defaced.image is None:
        raise Failure(
            f"{method} did not deface {subject} ({defaced.status}: {defaced.reason}); "
            "it cannot be in the cohort",
            allow_retries=False,
        )
    scan = raw_scans[subject]
    if scan.labels is None:
        raise Failure(f"{subject} has no OAR labels to train on", allow_retries=False)
    return make_subject(
        defaced.image,
        scan.labels,
        defaced.kept_mask,
        get_profile(study.profile),
        study.label_policy,
        key=f"{subject}/{method}",
        cache_dir=cache_dir,
    )


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@asset(
    partitions_def=fold_defacer_partitions,
    ins={
        "study_cohort": AssetIn(),
        "raw_scans": AssetIn(partition_mapping=AllPartitionMapping()),
        "defaced_scans": AssetIn(partition_mapping=ALL_SUBJECTS_OF_METHOD),
    },
    io_manager_key="model_io_manager",
    group_name="training",
    op_tags=GPU_OP_TAGS,
    pool=GPU_POOL,
    retry_policy=GPU_RETRY,
    automation_condition=AutomationCondition.eager(),
    output_required=False,
    check_specs=[
        AssetCheckSpec(
            MODEL_QUALITY,
            asset="unet_models",
            description="finite training history and validation Dice at the best epoch at "
            "least the profile's floor (demo 0.3, paper 0.5); a failed model is not used",
        )
    ],
)
def unet_models(
    context: AssetExecutionContext,
    study: StudyConfig,
    compute: ComputeConfig,
    study_cohort: pd.DataFrame,
    raw_scans: LazyPartitions,
    defaced_scans: LazyPartitions,
):
    """The study's U-Net trained on one method's defaced images for one fold.

    Trains in the precision this machine's self-check allows, falling back to float32
    when a step goes non-finite (no model is stored if float32 does too). The model
    quality gate's verdict is stored with the model and reported as the
    ``model_quality`` check; predictions skip a failed model. Methods outside the
    study's compared set are skipped (no model, the run says why): their faces were
    never removed, so the study has no cohort for them.
    """
    keys = context.partition_key.keys_by_dimension
    fold, method = int(keys["fold"]), keys["defacer"]
    if not is_compared(context, study_cohort, method):
        yield _quality_check(False, AssetCheckSeverity.WARN, note="not a compared method: no model")
        return
    members = cohort_members(study_cohort, fold)
    if not members["train"] or not members["validation"]:
        raise Failure(
            f"fold {fold}: {len(study_cohort)} usable subjects leave it without training or "
            f"validation subjects ({N_FOLDS} folds need at least {N_FOLDS})",
            allow_retries=False,
        )
    profile = get_profile(study.profile)
    scratch = Path(compute.scratch_dir)
    subjects = {
        role: [
            _training_subject(s, method, raw_scans, defaced_scans, study, scratch / "preprocessed")
            for s in names
        ]
        for role, names in members.items()
    }
    config = {
        "fold": fold,
        "min_val_dice": study.model_dice_floor(),
        "defacer": method,
        "profile": dataclasses.asdict(profile),
        "training_spacing_mm": profile.training_spacing,
        "label_policy": study.label_policy,
        "labels": {"background": 0, **OAR_LABELS},
        "seed": study.seed,
        "subjects": members,
        "input_digests": {
            role: [subject[DIGEST] for subject in group] for role, group in subjects.items()
        },
    }
    fingerprint = _fingerprint(config)
    stored = latest_metadata(context.instance, context.asset_key, context.partition_key)
    if stored.get("fingerprint") == fingerprint and _model_is_stored(context, fold, method):
        # A new subject elsewhere or a new compared method re-materializes study_cohort and
        # so requests every model; only a changed fold, input or setting may retrain one.
        context.log.info(
            f"fold {fold} on {method} is up to date (fingerprint {fingerprint}: same subjects, "
            "inputs and settings); not retrained"
        )
        yield _quality_check(stored.get("status") == "ok", note=f"stored model: {stored['status']}")
        return
    checkpoint_dir = scratch / "checkpoints" / f"defacer={method}" / f"fold={fold}" / fingerprint
    started = time.perf_counter()
    context.log.info(
        f"training fold {fold} on {method}: {len(members['train'])} train / "
        f"{len(members['validation'])} validation subjects, profile {profile.name}, "
        f"checkpoints in {checkpoint_dir}"
    )
    with leased_torch_device(compute, context.log.info) as device:
        verdict = choose_precision(profile, device, scratch / "precision")
        context.log.info(f"precision {verdict.precision} ({verdict.reason}, {verdict.machine})")
        try:
            result: TrainingResult = train_model(
                subjects["train"],
                subjects["validation"],
                profile,
                study.seed,
                checkpoint_dir,
                log=context.log.info,
                device=device,
                precision=verdict.precision,
            )
        except NonFiniteTrainingError as error:
            raise Failure(f"fold {fold} on {method}: {error}", allow_retries=False) from None
        if result.fallbacks:
            reason = result.fallbacks[0]["reason"]
            record_training_failure(verdict, reason, profile, device, scratch / "precision")
    seconds = time.perf_counter() - started
    quality = quality_record(result.history, result.best_epoch, config["min_val_dice"])
    config |= {
        "fingerprint": fingerprint,
        "device": device,
        "precision": {
            "self_check": verdict.as_dict(),
            "started": verdict.precision,
            "final": result.precision,
            "fallbacks": result.fallbacks,
        },
        "quality": quality,
        "versions": {
            package: version(package)
            for package in ("defacing_assets", "torch", "monai", "torchio", "SimpleITK")
        },
    }
    result = dataclasses.replace(result, config=config)
    history = result.history
    best = history.iloc[result.best_epoch]
    status = "ok" if quality["passed"] else f"failed: {result.failure}"
    if not quality["passed"]:
        context.log.error(f"fold {fold} on {method} failed the quality gate: {result.failure}")
    yield Output(
        result,
        metadata={
            "status": status,
            "best_epoch": result.best_epoch + 1,
            "epochs": len(history),
            "best_val_loss": float(best["val_loss"]),
            "val_dice_at_best": float(best["val_dice"]),
            "max_val_dice": float(history["val_dice"].max()),
            "min_val_dice": config["min_val_dice"],
            "precision": result.precision,
            "precision_fallbacks": MetadataValue.json(result.fallbacks),
            "precision_check": verdict.reason,
            "train_subjects": ", ".join(members["train"]),
            "validation_subjects": ", ".join(members["validation"]),
            "profile": profile.name,
            "seed": study.seed,
            "fingerprint": fingerprint,
            "device": device,
            "seconds": round(seconds, 1),
            "seconds_per_epoch": round(float(history["seconds"].mean()), 2),
            "loss_curves": png_metadata(
                loss_curves(history, f"{method}, fold {fold}", result.best_epoch),
                f"loss curves {method} fold {fold}",
            ),
        },
    )
    yield _quality_check(
        quality["passed"],
        problems="; ".join(quality["problems"]) or "none",
        val_dice_at_best=float(best["val_dice"]),
        min_val_dice=config["min_val_dice"],
        precision=result.precision,
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def _model_is_stored(context: AssetExecutionContext, fold: int, method: str) -> bool:
    """Whether the recorded model's files are in storage: Dagster's record outlives a
    wiped or restored store, and a model skipped on the record alone would never come back."""
    missing = missing_stored_files(
        context.resources.model_io_manager,
        context.asset_key,
        context.assets_def.partitions_def,
        context.partition_key,
    )
    if missing:
        context.log.warning(
            f"fold {fold} on {method} is recorded as materialized but not stored (missing "
            f"{', '.join(str(file) for file in missing)}): retraining"
        )
    return not missing


def _quality_check(
    passed: bool, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR, **metadata
) -> AssetCheckResult:
    """The ``model_quality`` result; every run reports one, also when it trains nothing."""
    return AssetCheckResult(
        check_name=MODEL_QUALITY, passed=bool(passed), severity=severity, metadata=metadata
    )
