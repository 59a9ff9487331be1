"""unet_models as a Dagster asset: the fold's split, the stored model, skipped methods."""

import json

import pandas as pd
import pytest
import torch
from dagster import MultiPartitionKey, instance_for_test, materialize

from defacing_assets.assets.defacing import defaced_scans
from defacing_assets.assets.ingest import raw_scans
from defacing_assets.assets.qc import qc_labels, study_cohort
from defacing_assets.assets.training import unet_models
from defacing_assets.cohort.synthetic import write_cohort
from defacing_assets.evaluation.cohort import fold_roles
from defacing_assets.profiles import get_profile
from defacing_assets.segmentation.train import MODEL_FILES
from defacing_assets_tests.conftest import study_resources

SUBJECTS = [f"SYN{index:03d}" for index in range(1, 6)]
GRAPH = [raw_scans, defaced_scans, qc_labels, study_cohort, unet_models]


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
                GRAPH[:3],
                partition_key=key,
                selection=GRAPH[1:3],
                instance=instance,
                resources=resources,
            ).success
        assert materialize(
            GRAPH, selection=[study_cohort], instance=instance, resources=resources
        ).success
        results = {
            method: materialize(
                GRAPH,
                selection=[unet_models],
                partition_key=MultiPartitionKey({"fold": "0", "defacer": method}),
                instance=instance,
                resources=resources,
            )
            for method in ("original", "pydeface")
        }
    return study, results


def test_model_is_trained_on_the_folds_split_and_stored(trained):
    study, results = trained
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

    history = pd.read_parquet(folder / "history.parquet")
    assert len(history) == get_profile("ci").max_epochs
    assert {"epoch", "train_loss", "val_loss", "val_dice", "seconds"} <= set(history.columns)
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


def test_method_outside_the_comparison_is_skipped_without_a_model(trained):
    study, results = trained
    result = results["pydeface"]
    assert result.success
    assert result.asset_materializations_for_node("unet_models") == []
    assert not (study / "store" / "unet_models" / "defacer=pydeface").exists()
