"""unet_models as a Dagster asset: the fold's split, the stored model, skipped methods."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import MultiPartitionKey, instance_for_test, materialize

from defacing_assets.assets import training
from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.graph import STUDY_ASSETS
from defacing_assets.assets.inference import predictions, segmentation_metrics
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort, voxel_loss, voxel_ratios
from defacing_assets.assets.reporting import stats_tables, study_report
from defacing_assets.assets.training import unet_models
from defacing_assets.cohort.synthetic import write_cohort
from defacing_assets.evaluation.cohort import fold_roles
from defacing_assets.imaging.io import load_volume
from defacing_assets.profiles import get_profile
from defacing_assets.resources import StudyConfig
from defacing_assets.segmentation.train import (
    MODEL_FILES,
    NonFiniteTrainingError,
    load_model,
    train_model,
)
from defacing_assets_tests.conftest import study_resources
from defacing_assets_tests.test_stored_files_check import run_stored_files_check

SUBJECTS = [f"SYN{index:03d}" for index in range(1, 6)]
GRAPH = STUDY_ASSETS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Five ci subjects through the graph on `original`, then fold 0's model."""
    data = tmp_path_factory.mktemp("data")
    write_cohort(data, n_subjects=len(SUBJECTS), seed=5, profile="ci")
    study = tmp_path_factory.mktemp("study")
    resources = study_resources(data, study)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("subjects", SUBJECTS)
        instance.add_dynamic_partitions("defacers", ["original", "pydeface"])
        for subject in SUBJECTS:
            key = MultiPartitionKey({"subject": subject, "defacer": "original"})
            assert materialize(
                GRAPH[:3],
                partition_key=subject,
                selection=[raw_scans],
                instance=instance,
                resources=resources,
            ).success
            assert materialize(
                GRAPH[:4],
                partition_key=key,
                selection=GRAPH[1:4],
                instance=instance,
                resources=resources,
            ).success
        assert materialize(
            GRAPH, selection=[study_cohort, voxel_loss], instance=instance, resources=resources
        ).success
        results = {
            method: _train(instance, resources, "0", method) for method in ("original", "pydeface")
        }
        yield study, results, instance, resources


def _train(instance, resources, fold: str, method: str):
    return materialize(
        GRAPH,
        selection=[unet_models],
        partition_key=MultiPartitionKey({"fold": fold, "defacer": method}),
        instance=instance,
        resources=resources,
    )


def test_model_is_trained_on_the_folds_split_and_stored(trained):
    study, results, _, _ = trained
    result = results["original"]
    assert result.success
    folder = study / "store" / "unet_models" / "defacer=original" / "fold=0"
    assert {p.name for p in folder.iterdir()} == set(MODEL_FILES)

    config = json.loads((folder / "config.json").read_text())
    cohort = pd.read_parquet(study / "store" / "study_cohort.parquet")
    fold_of = dict(zip(cohort["subject"], cohort["fold"], strict=True))
    roles = fold_roles(0, 5)
    assert {fold_of[s] for s in config["subjects"]["train"]} <= set(roles["train"])
    assert [fold_of[s] for s in config["subjects"]["validation"]] == roles["validation"]
    assert len(config["subjects"]["train"]) == 3
    assert config["profile"]["name"] == "ci" and config["labels"]["Parotid_R"] == 8
    assert {"torch", "monai", "torchio"} <= set(config["versions"])
    assert config["quality"] == {"min_val_dice": 0.0, "passed": True, "problems": []}
    assert config["precision"]["final"] == config["precision"]["self_check"]["precision"]
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "model_quality" and evaluation.passed

    history = pd.read_parquet(folder / "history.parquet")
    assert len(history) == get_profile("ci").max_epochs
    assert {"epoch", "train_loss", "val_loss", "val_dice", "precision"} <= set(history.columns)
    weights = torch.load(folder / "model.pt", weights_only=True)
    assert weights["final_conv.weight"].shape[0] == 9

    [materialization] = result.asset_materializations_for_node("unet_models")
    metadata = materialization.metadata
    assert metadata["loss_curves"].value.startswith("![")
    assert metadata["epochs"].value == len(history)
    assert metadata["best_epoch"].value == config["best_epoch"] + 1
    assert not any((study / "scratch" / "checkpoints").rglob("checkpoint.pt")), (
        "a finished model leaves no checkpoint behind"
    )


def test_an_up_to_date_model_is_not_retrained(trained):
    """study_cohort re-materializes when a compared method is added; models it does not
    change must not retrain (eager automation requests every fold)."""
    study, _, instance, resources = trained
    folder = study / "store" / "unet_models" / "defacer=original" / "fold=0"
    before = (folder / "model.pt").stat().st_mtime_ns
    result = _train(instance, resources, "0", "original")
    assert result.success
    assert result.asset_materializations_for_node("unet_models") == []
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("up to date (fingerprint" in m for m in messages), messages
    assert (folder / "model.pt").stat().st_mtime_ns == before


def test_a_recorded_model_missing_from_storage_fails_the_check_and_is_retrained(
    trained, monkeypatch
):
    """Dagster's record outlives a wiped store: the stored_files check reports the missing
    model, and unet_models retrains it instead of skipping on the record (training is
    stubbed with the model it had stored, so no epoch runs here)."""
    study, _, instance, resources = trained
    folder = study / "store" / "unet_models" / "defacer=original" / "fold=0"
    before = load_model(folder)
    assert run_stored_files_check(instance, resources, GRAPH, unet_models.key).passed

    shutil.rmtree(folder)
    failed = run_stored_files_check(instance, resources, GRAPH, unet_models.key)
    assert not failed.passed
    [(partition, files)] = failed.metadata["missing"].value.items()
    assert set(partition.split("|")) == {"0", "original"}
    assert files[0].endswith("fold=0/model.pt")

    calls = []

    def stored_model(*args, **kwargs):
        calls.append(args)
        return dataclasses.replace(before, config={})

    monkeypatch.setattr(training, "train_model", stored_model)
    result = _train(instance, resources, "0", "original")
    assert result.success and len(calls) == 1
    assert len(result.asset_materializations_for_node("unet_models")) == 1
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("recorded as materialized but not stored" in m for m in messages), messages
    assert {p.name for p in folder.iterdir()} == set(MODEL_FILES)
    assert run_stored_files_check(instance, resources, GRAPH, unet_models.key).passed


@pytest.mark.parametrize(
    "asset", [raw_scans, defaced_scans, qc_labels, voxel_ratios], ids=lambda a: a.key.path[-1]
)
def test_the_stored_files_checks_find_every_recorded_partition_in_the_store(trained, asset):
    """Single- and two-dimension partitions, folders and Parquet files: the check finds
    every partition Dagster recorded (five subjects on original) where it was written."""
    _, _, instance, resources = trained
    evaluation = run_stored_files_check(instance, resources, GRAPH, asset.key)
    assert evaluation.passed, evaluation.metadata
    assert evaluation.metadata["partitions_checked"].value == len(SUBJECTS)


def test_method_outside_the_comparison_is_skipped_without_a_model(trained):
    study, results, _, _ = trained
    result = results["pydeface"]
    assert result.success
    assert result.asset_materializations_for_node("unet_models") == []
    assert not (study / "store" / "unet_models" / "defacer=pydeface").exists()


def test_transient_failure_is_retried_and_resumes_from_the_checkpoint(trained, monkeypatch):
    study, _, instance, resources = trained
    attempts = []

    def flaky_train_model(*args, log, **kwargs):
        attempts.append(len(attempts) + 1)

        def failing_log(line: str) -> None:
            log(line)
            if len(attempts) == 1 and line.startswith("epoch 2/"):
                raise OSError("simulated: GPU fell off the bus")

        return train_model(*args, log=failing_log, **kwargs)

    monkeypatch.setattr(training, "train_model", flaky_train_model)
    result = _train(instance, resources, "1", "original")
    assert result.success
    assert attempts == [1, 2]
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any(m.startswith("resuming after epoch 2 ") for m in messages), messages
    folder = study / "store" / "unet_models" / "defacer=original" / "fold=1"
    history = pd.read_parquet(folder / "history.parquet")
    assert list(history["epoch"]) == list(range(get_profile("ci").max_epochs))


def test_training_that_goes_non_finite_in_float32_fails_and_stores_no_model(trained, monkeypatch):
    study, _, instance, resources = trained

    def diverging_train_model(*args, **kwargs):
        raise NonFiniteTrainingError("training went non-finite in float32 at epoch 2, step 1")

    monkeypatch.setattr(training, "train_model", diverging_train_model)
    result = materialize(
        GRAPH,
        selection=[unet_models],
        partition_key=MultiPartitionKey({"fold": "2", "defacer": "original"}),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "non-finite in float32 at epoch 2" in failure.step_failure_data.error.message
    assert not (study / "store" / "unet_models" / "defacer=original" / "fold=2").exists()


@pytest.fixture(scope="module")
def evaluated(trained):
    """Every fold trained on original, then predictions and metrics of (original, original)."""
    study, _, instance, resources = trained
    done = instance.get_materialized_partitions(unet_models.key)
    for fold in range(5):
        if MultiPartitionKey({"fold": str(fold), "defacer": "original"}) not in done:
            assert _train(instance, resources, str(fold), "original").success
    cell = MultiPartitionKey({"train_defacer": "original", "eval_defacer": "original"})
    result = materialize(
        GRAPH,
        selection=[predictions, segmentation_metrics],
        partition_key=cell,
        instance=instance,
        resources=resources,
    )
    assert result.success
    return trained


def _original_scores(study) -> pd.DataFrame:
    """segmentation_metrics of the (original, original) cell."""
    cell = study / "store" / "segmentation_metrics" / "eval_defacer=original"
    return pd.read_parquet(cell / "train_defacer=original.parquet")


def test_every_test_subject_is_predicted_by_its_folds_model_on_its_own_grid(evaluated):
    study, _, _, _ = evaluated
    folder = study / "store" / "predictions" / "eval_defacer=original" / "train_defacer=original"
    cohort = pd.read_parquet(study / "store" / "study_cohort.parquet")
    folds = json.loads((folder / "folds.json").read_text())
    assert folds == dict(zip(cohort["subject"], cohort["fold"].astype(int), strict=True))
    for subject in SUBJECTS:
        predicted = load_volume(folder / f"{subject}.nii.gz")
        original = load_volume(
            study / "store" / "raw_scans" / f"subject={subject}" / "image.nii.gz"
        )
        assert predicted.shape == original.shape
        np.testing.assert_allclose(predicted.affine, original.affine, atol=1e-4)
        assert set(np.unique(predicted.array)) <= set(range(9))

    scores = _original_scores(study)
    assert len(scores) == len(SUBJECTS) * 8
    assert set(scores["subject"]) == set(SUBJECTS)
    assert scores["dice"].between(0, 1).all(), "every OAR is annotated and kept by original"
    assert (scores.loc[scores["omission"] == "", "msd"] >= 0).all()


def test_study_runs_through_to_the_report(evaluated):
    """From the stored metrics: tables, figures and one HTML report."""
    study, _, instance, resources = evaluated
    result = materialize(
        GRAPH, selection=[stats_tables, study_report], instance=instance, resources=resources
    )
    assert result.success
    report = (study / "report.html").read_text()
    assert "Table 2: composite Dice" in report and "Published (Sahlsten et al. 2023)" in report
    assert report.count("data:image/png;base64,") >= 5, "renders and figures embedded"
    assert "pydeface is not among the compared methods" in report
    table2 = pd.read_csv(study / "tables" / "table2.csv", index_col=0)
    assert list(table2.index) == ["original"]


def test_a_model_under_the_floor_fails_its_check_and_is_not_used(evaluated):
    """Fold 4 retrained against an unreachable floor: the check fails, and its test
    subjects are scored as "model failed" instead of being predicted."""
    study, _, instance, resources = evaluated
    study_config = resources["study"]
    strict = {
        **resources,
        "study": StudyConfig(
            data_root=study_config.data_root,
            study_dir=study_config.study_dir,
            profile=study_config.profile,
            min_model_dice=1.0,
        ),
    }
    result = _train(instance, strict, "4", "original")
    assert result.success, "a model that fails the gate is data, not a crashed run"
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    [materialization] = result.asset_materializations_for_node("unet_models")
    assert materialization.metadata["status"].value.startswith("failed: validation Dice")

    cell = MultiPartitionKey({"train_defacer": "original", "eval_defacer": "original"})
    assert materialize(
        GRAPH,
        selection=[predictions, segmentation_metrics],
        partition_key=cell,
        instance=instance,
        resources=strict,
    ).success
    cohort = pd.read_parquet(study / "store" / "study_cohort.parquet")
    tested = set(cohort.loc[cohort["fold"] == 4, "subject"])
    folder = study / "store" / "predictions" / "eval_defacer=original" / "train_defacer=original"
    assert tested and not any((folder / f"{s}.nii.gz").exists() for s in tested)
    scores = _original_scores(study)
    failed = scores[scores["omission"].str.startswith("model failed: fold 4: validation Dice")]
    assert set(failed["subject"]) == tested and failed["dice"].isna().all()
    assert (failed["fold"] == 4).all()
