"""predictions and segmentation_metrics: one cell of the train x evaluation matrix."""

from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
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

from defacing_assets.assets.training import is_compared
from defacing_assets.evaluation.scores import (
    SCORE_COLUMNS,
    failed_model_subject,
    omitted_subject,
    score_prediction,
)
from defacing_assets.execution import GPU_OP_TAGS, GPU_POOL, GPU_RETRY, leased_torch_device
from defacing_assets.partitions import N_FOLDS, train_eval_partitions
from defacing_assets.profiles import get_profile
from defacing_assets.resources import ComputeConfig, StudyConfig
from defacing_assets.segmentation.infer import CohortPredictions, load_network, predict_labels
from defacing_assets.segmentation.precision import choose_precision
from defacing_assets.storage import LazyPartitions

# A downstream dimension takes one upstream dimension, so the "all of them"
# side is attached to the other one: every fold for the training method, every
# subject for the evaluation method.
ALL_FOLDS_OF_TRAINING_METHOD = MultiPartitionMapping(
    {
        "fold": DimensionPartitionMapping("eval_defacer", AllPartitionMapping()),
        "defacer": DimensionPartitionMapping("train_defacer", IdentityPartitionMapping()),
    }
)
ALL_SUBJECTS_OF_EVALUATION_METHOD = MultiPartitionMapping(
    {
        "subject": DimensionPartitionMapping("train_defacer", AllPartitionMapping()),
        "defacer": DimensionPartitionMapping("eval_defacer", IdentityPartitionMapping()),
    }
)


@asset(
    partitions_def=train_eval_partitions,
    ins={
        "study_cohort": AssetIn(),
        "unet_models": AssetIn(partition_mapping=ALL_FOLDS_OF_TRAINING_METHOD),
        "defaced_scans": AssetIn(partition_mapping=ALL_SUBJECTS_OF_EVALUATION_METHOD),
    },
    io_manager_key="prediction_io_manager",
    group_name="evaluation",
    op_tags=GPU_OP_TAGS,
    pool=GPU_POOL,
    retry_policy=GPU_RETRY,
    automation_condition=AutomationCondition.eager(),
    output_required=False,
)
def predictions(
    context: AssetExecutionContext,
    study: StudyConfig,
    compute: ComputeConfig,
    study_cohort: pd.DataFrame,
    unet_models: LazyPartitions,
    defaced_scans: LazyPartitions,
):
    """Each fold's model (trained on one method) segments that fold's test subjects as
    defaced by another method; label maps on the original grid. A fold whose model
    failed its quality gate predicts nothing; its subjects carry the reason."""
    keys = context.partition_key.keys_by_dimension
    trained_on, evaluated_on = keys["train_defacer"], keys["eval_defacer"]
    if not (
        is_compared(context, study_cohort, trained_on)
        and is_compared(context, study_cohort, evaluated_on)
    ):
        return
    profile = get_profile(study.profile)
    result = CohortPredictions()
    with leased_torch_device(compute, context.log.info) as device:
        precision = choose_precision(profile, device, Path(compute.scratch_dir) / "precision")
        for fold in range(N_FOLDS):
            tested = sorted(study_cohort.loc[study_cohort["fold"] == fold, "subject"])
            if not tested:
                continue
            model = unet_models[MultiPartitionKey({"fold": str(fold), "defacer": trained_on})]
            if model.failure:
                context.log.warning(
                    f"fold {fold}: the {trained_on} model failed its quality gate "
                    f"({model.failure}); {', '.join(tested)} not predicted"
                )
                for subject in tested:
                    result.folds[subject] = fold
                    result.model_failures[subject] = f"fold {fold}: {model.failure}"
                continue
            if model.config["profile"]["name"] != profile.name:
                raise Failure(
                    f"the {trained_on} model of fold {fold} was trained with profile "
                    f"{model.config['profile']['name']}, the study uses {profile.name}: retrain it",
                    allow_retries=False,
                )
            network = load_network(model, device)
            for subject in tested:
                key = MultiPartitionKey({"subject": subject, "defacer": evaluated_on})
                defaced = defaced_scans[key]
                if defaced.image is None:
                    raise Failure(
                        f"{evaluated_on} did not deface {subject} ({defaced.reason})",
                        allow_retries=False,
                    )
                result.labels[subject] = predict_labels(
                    network, defaced.image, profile, device, precision.precision
                )
                result.folds[subject] = fold
            context.log.info(f"fold {fold}: predicted {', '.join(tested)}")
    yield Output(
        result,
        metadata={
            "subjects": len(result.labels),
            "trained_on": trained_on,
            "evaluated_on": evaluated_on,
            "device": device,
            "precision": precision.precision,
            "model_failures": MetadataValue.json(result.model_failures),
        },
    )


METRIC_COLUMNS = ["subject", "fold", "train_defacer", "eval_defacer", *SCORE_COLUMNS]


@asset(
    partitions_def=train_eval_partitions,
    ins={
        "raw_scans": AssetIn(partition_mapping=AllPartitionMapping()),
        "defaced_scans": AssetIn(partition_mapping=ALL_SUBJECTS_OF_EVALUATION_METHOD),
    },
    group_name="evaluation",
    automation_condition=AutomationCondition.eager(),
)
def segmentation_metrics(
    context: AssetExecutionContext,
    study: StudyConfig,
    predictions: CohortPredictions,
    raw_scans: LazyPartitions,
    defaced_scans: LazyPartitions,
):
    """Per subject and OAR: Dice, MSD, HD95, mean HD95 against the reference the
    evaluation method left (``StudyConfig.reference_policy``), and why any is missing
    (subjects outside the cohort get rows with that reason and no values, fold -1)."""
    keys = context.partition_key.keys_by_dimension
    trained_on, evaluated_on = keys["train_defacer"], keys["eval_defacer"]
    frames = []
    for subject in sorted(raw_scans):
        if subject in predictions.labels:
            key = MultiPartitionKey({"subject": subject, "defacer": evaluated_on})
            scores = score_prediction(
                predictions.labels[subject],
                raw_scans[subject].labels,
                defaced_scans[key].kept_mask,
                study.reference_policy,
            )
            fold = predictions.folds[subject]
        elif subject in predictions.model_failures:
            scores = failed_model_subject(predictions.model_failures[subject])
            fold = predictions.folds[subject]
        else:
            scores, fold = omitted_subject(), -1
        scores.insert(0, "eval_defacer", evaluated_on)
        scores.insert(0, "train_defacer", trained_on)
        scores.insert(0, "fold", fold)
        scores.insert(0, "subject", subject)
        frames.append(scores)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)
    omitted = table[table["omission"] != ""] if len(table) else table
    per_oar = table.groupby("oar", sort=False)[["dice", "msd", "hd95"]].mean().round(3)
    return Output(
        table,
        metadata={
            "subjects": len(predictions.labels),
            "reference": study.reference_policy,
            "composite_dice": float(table["dice"].mean()) if len(table) else float("nan"),
            "omitted": MetadataValue.json(omitted["omission"].value_counts().to_dict()),
            "per_oar": MetadataValue.md(per_oar.to_markdown()),
        },
    )
