"""QC verdicts, voxel ratios, the study cohort and the voxel-loss summary (Table 1, Figure 2)."""

import hashlib
import json
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AutomationCondition,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    Output,
    asset,
)
from dagster_pandas import PandasColumn, create_dagster_pandas_dataframe_type

from defacing_assets.assets.inputs import PRESENT_PARTITIONS, concat_partitions
from defacing_assets.assets.metadata import png_metadata
from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.evaluation.cohort import select_cohort
from defacing_assets.evaluation.reidentification import rank1_reidentification
from defacing_assets.evaluation.voxel_loss import figure2, table1
from defacing_assets.evaluation.voxels import VOXEL_RATIO_COLUMNS
from defacing_assets.evaluation.voxels import voxel_ratios as count_voxel_ratios
from defacing_assets.imaging.volume import Volume
from defacing_assets.partitions import N_FOLDS, subject_defacer_partitions
from defacing_assets.qc.features import FEATURES
from defacing_assets.qc.overrides import OVERRIDES_FILE, apply_overrides, load_overrides
from defacing_assets.qc.render import montage, png_bytes
from defacing_assets.qc.verdict import QC_COLUMNS, assess
from defacing_assets.resources import StudyConfig

_BY_SUBJECT = AssetIn(
    "raw_scans", partition_mapping=MultiToSingleDimensionPartitionMapping("subject")
)

QcTable = create_dagster_pandas_dataframe_type(
    name="QcTable",
    columns=[
        PandasColumn.string_column("subject", non_nullable=True),
        PandasColumn.string_column("defacer", non_nullable=True),
        PandasColumn.boolean_column("passed", non_nullable=True),
        PandasColumn.boolean_column("face_detected", non_nullable=True),
    ],
)
VoxelRatioTable = create_dagster_pandas_dataframe_type(
    name="VoxelRatioTable",
    columns=[
        PandasColumn.string_column("subject", non_nullable=True),
        PandasColumn.string_column("defacer", non_nullable=True),
        PandasColumn.string_column("oar", non_nullable=True),
        PandasColumn.integer_column("voxels_before", min_value=0, non_nullable=True),
        PandasColumn.integer_column("voxels_kept", min_value=0, non_nullable=True),
        PandasColumn.float_column("ratio", min_value=0.0, max_value=1.0),
        PandasColumn.boolean_column("completely_removed", non_nullable=True),
    ],
)


def _keys(context: AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys["subject"], keys["defacer"]


@asset(
    partitions_def=subject_defacer_partitions,
    ins={"raw_scans": _BY_SUBJECT},
    group_name="qc",
    dagster_type=QcTable,
    automation_condition=AutomationCondition.eager(),
    check_specs=[
        AssetCheckSpec(
            "original_shows_face",
            asset="qc_labels",
            description="the subject's original renders show a face, else its QC is unreliable",
        )
    ],
)
def qc_labels(
    context: AssetExecutionContext,
    study: StudyConfig,
    raw_scans: Scan,
    defaced_scans: DefacingResult,
):
    """Face still there? Detectors on five renders plus the eyes/nose/mouth: judged at dlib's
    landmarks on the original's frontal render, with the 3-D landmarks a second opinion."""
    subject, method = _keys(context)
    overrides = load_overrides(Path(study.study_dir) / OVERRIDES_FILE)  # a bad file fails first
    verdict = assess(raw_scans, defaced_scans, method, seed=study.seed)
    table = pd.DataFrame([verdict.row()], columns=QC_COLUMNS)
    table = apply_overrides(
        table, overrides[(overrides["subject"] == subject) & (overrides["defacer"] == method)]
    )
    row = table.iloc[0]
    metadata = {
        "passed": bool(row["passed"]),
        "manual": bool(row["manual"]),
        "reason": verdict.reason,
        "seed": study.seed,
        "face_detected": verdict.face_detected,
        "eyes_removed": MetadataValue.text(str(verdict.eyes_removed)),
        "nose_removed": MetadataValue.text(str(verdict.nose_removed)),
        "mouth_removed": MetadataValue.text(str(verdict.mouth_removed)),
        "jaw_removed": MetadataValue.text(str(verdict.jaw_removed)),
        "identity_distance": verdict.identity_distance
        if verdict.identity_distance is not None
        else MetadataValue.null(),
        **{
            name: MetadataValue.float(float(value))
            if value is not None and value == value
            else MetadataValue.null()
            for name, value in (
                ("face_surface_kept", verdict.face_surface_kept),
                ("face_depth_correlation", verdict.face_depth_correlation),
                *(
                    (f"{feature}_surface_kept", verdict.surface_kept(feature))
                    for feature in FEATURES
                ),
            )
        },
        "views": MetadataValue.json(verdict.views),
        "landmark_source": verdict.landmark_source,
        "removed_3d": MetadataValue.json(verdict.removed_3d()),
    }
    if verdict.renders:
        metadata["renders"] = png_metadata(
            png_bytes(montage(verdict.renders)), f"{method} {subject}"
        )
    yield Output(table, metadata=metadata)
    yield AssetCheckResult(
        check_name="original_shows_face",
        passed=verdict.original_face_detected,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "note": "ok"
            if verdict.original_face_detected
            else "no face detected on the original: this subject's QC is unreliable"
        },
    )


@asset(
    partitions_def=subject_defacer_partitions,
    ins={"raw_scans": _BY_SUBJECT},
    group_name="qc",
    dagster_type=VoxelRatioTable,
    automation_condition=AutomationCondition.eager(),
)
def voxel_ratios(context: AssetExecutionContext, raw_scans: Scan, defaced_scans: DefacingResult):
    """Per OAR: voxels before, kept, ratio, completely removed (failed defacing keeps nothing)."""
    subject, method = _keys(context)
    if raw_scans.labels is None:
        table = pd.DataFrame(columns=["subject", "defacer", *VOXEL_RATIO_COLUMNS])
        return Output(table, metadata={"note": "unlabelled scan: no OARs to count"})
    kept = defaced_scans.kept_mask
    if kept is None:
        kept = Volume(raw_scans.labels.array * 0, raw_scans.labels.affine)
    table = count_voxel_ratios(raw_scans.labels, kept)
    table.insert(0, "defacer", method)
    table.insert(0, "subject", subject)
    removed = table.loc[table["completely_removed"], "oar"].tolist()
    return Output(
        table,
        metadata={
            "defacing_status": defaced_scans.status,
            "completely_removed": ", ".join(removed) or "none",
            "mean_ratio": float(table["ratio"].mean()),
            "table": MetadataValue.md(
                table[["oar", "voxels_before", "voxels_kept", "ratio"]].to_markdown(
                    index=False, floatfmt=".3f"
                )
            ),
        },
    )


def _verdicts(study: StudyConfig, qc_labels: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every QC row with the current qc_overrides.csv applied (validated against the rows)."""
    qc = concat_partitions(qc_labels)
    overrides = load_overrides(
        Path(study.study_dir) / OVERRIDES_FILE, set(qc["subject"]), set(qc["defacer"])
    )
    return apply_overrides(qc, overrides)


def _cohort_fingerprint(cohort: pd.DataFrame, compared: list[str]) -> str:
    payload = {"cohort": cohort.to_dict("records"), "compared": compared}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@asset(
    group_name="qc",
    automation_condition=AutomationCondition.eager(),
    ins={"qc_labels": PRESENT_PARTITIONS},
    output_required=False,
)
def study_cohort(
    context: AssetExecutionContext, study: StudyConfig, qc_labels: dict[str, pd.DataFrame]
):
    """Usable subjects (QC passed for every compared method) and their seeded folds.

    A QC partition not computed yet excludes its subject ("no QC result"). When
    the cohort, its folds and the compared methods are what is already stored,
    nothing new is materialized, so models and evaluations downstream stay
    current: a defacer that fails QC everywhere retrains nothing."""
    qc = _verdicts(study, qc_labels)
    labelled = sorted(qc.loc[qc["labelled"].astype(bool), "subject"].unique())
    cohort, excluded, compared = select_cohort(
        qc, labelled, study.compared_methods or None, N_FOLDS, study.seed
    )
    cohort.attrs["compared_methods"] = compared  # stored with the table (Parquet metadata)
    fingerprint = _cohort_fingerprint(cohort, compared)
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    if previous is not None:
        stored = previous.asset_materialization.metadata.get("cohort_fingerprint")
        if stored is not None and stored.value == fingerprint:
            context.log.info("cohort, folds and compared methods unchanged: not re-materialized")
            return
    yield Output(
        cohort,
        metadata={
            "cohort_fingerprint": fingerprint,
            "compared_methods": ", ".join(compared),
            "usable_subjects": len(cohort),
            "manual_overrides": int(qc["manual"].sum()),
            "excluded": MetadataValue.md(
                excluded.to_markdown(index=False) if len(excluded) else "none"
            ),
            "fold_sizes": MetadataValue.json(
                cohort["fold"].value_counts().sort_index().to_dict() if len(cohort) else {}
            ),
        },
    )


@asset(
    group_name="qc",
    automation_condition=AutomationCondition.eager(),
    ins={"qc_labels": PRESENT_PARTITIONS, "voxel_ratios": PRESENT_PARTITIONS},
)
def voxel_loss(
    study: StudyConfig, voxel_ratios: dict[str, pd.DataFrame], qc_labels: dict[str, pd.DataFrame]
):
    """Table 1 (OARs completely removed / unavailable) and Figure 2 (kept ratio per OAR)."""
    ratios = concat_partitions(voxel_ratios)
    qc = _verdicts(study, qc_labels)
    methods = sorted(set(qc["defacer"]) - {"original"})
    table = table1(ratios, qc, methods)
    reidentification = rank1_reidentification(qc)
    png = figure2(ratios, qc, methods)
    figure_path = Path(study.study_dir) / "figures" / "figure2.png"
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    figure_path.write_bytes(png)
    return Output(
        table.astype(str).reset_index(),
        metadata={
            "table1": MetadataValue.md(table.to_markdown()),
            "reidentification": MetadataValue.md(reidentification.to_markdown(index=False)),
            "figure2": png_metadata(png, "Figure 2"),
            "figure2_path": MetadataValue.path(str(figure_path)),
        },
    )
