"""stats_tables and study_report: the study's answer as tables, figures and one HTML file."""

import datetime
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AutomationCondition,
    MetadataValue,
    MultiPartitionKey,
    Output,
    asset,
)

from defacing_assets.assets.inputs import PRESENT_PARTITIONS, concat_partitions
from defacing_assets.assets.metadata import png_metadata
from defacing_assets.cohort.fingerprint import file_sha256
from defacing_assets.evaluation.report import (
    ReportInputs,
    example_renders,
    main_effects,
    original_model_on_defaced,
    qc_summary,
    render_html,
)
from defacing_assets.evaluation.results import study_results
from defacing_assets.evaluation.scores import failed_models
from defacing_assets.evaluation.tables import BASELINE
from defacing_assets.resources import StudyConfig
from defacing_assets.storage import LazyPartitions

PACKAGES = ("defacing_assets", "dagster", "torch", "monai", "torchio", "SimpleITK", "scipy")


def _write_table(folder: Path, name: str, table: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / f"{name}.csv")
    table.reset_index().to_parquet(folder / f"{name}.parquet", index=False)


def _table1(voxel_loss: pd.DataFrame) -> pd.DataFrame:
    """voxel_loss stores Table 1 with its OAR index as the first column."""
    return voxel_loss.set_index(voxel_loss.columns[0]) if len(voxel_loss) else voxel_loss


def _methods(cohort: pd.DataFrame) -> list[str]:
    return list(cohort.attrs.get("compared_methods", []))


@asset(
    group_name="evaluation",
    ins={"segmentation_metrics": PRESENT_PARTITIONS},
    automation_condition=AutomationCondition.eager(),
)
def stats_tables(
    context: AssetExecutionContext,
    study: StudyConfig,
    study_cohort: pd.DataFrame,
    voxel_loss: pd.DataFrame,
    segmentation_metrics: dict[str, pd.DataFrame],
):
    """Every comparison of the study in one long table; Table 1, Table 2 and the per-OAR
    tables as CSV and Parquet under ``<study>/tables``, Figures 2 (from ``voxel_loss``),
    3, 4, A1, A2 as PNG under ``<study>/figures``."""
    tables_dir = Path(study.study_dir) / "tables"
    figures_dir = Path(study.study_dir) / "figures"
    table1 = _table1(voxel_loss)
    _write_table(tables_dir, "table1", table1)
    metadata: dict = {"table1": MetadataValue.md(table1.to_markdown())}
    figure2 = _read(figures_dir / "figure2.png")
    if figure2 is not None:
        metadata["figure2"] = png_metadata(figure2, "Figure 2")
    metrics = concat_partitions(segmentation_metrics)
    if metrics.empty:
        context.log.warning("no segmentation_metrics stored yet: only Table 1")
        return Output(pd.DataFrame(), metadata={**metadata, "comparisons": 0})
    results = study_results(metrics, _methods(study_cohort), study.min_cases)
    failed = failed_models(metrics)
    if failed:
        context.log.warning(f"failed models, not tested: {failed}")
        metadata["failed_models"] = MetadataValue.json(failed)
    table2 = results.table2
    _write_table(tables_dir, "table2", table2.cells)
    _write_table(tables_dir, "table2_n", table2.n)
    _write_table(tables_dir, "table2_significance", table2.significance)
    comparisons = [table2.significance.assign(table="table2", metric="dice")]
    metadata |= {
        "table2": MetadataValue.md(table2.cells.to_markdown()),
        "table2_n": MetadataValue.md(table2.n.to_markdown()),
        "table2_significance": MetadataValue.md(table2.significance.to_markdown(index=False)),
    }
    for name, experiment in results.experiments.items():
        _write_table(tables_dir, name, experiment.comparisons)
        comparisons.append(experiment.comparisons.assign(table=name))
        if experiment.dropped:
            metadata[f"{name}_dropped"] = MetadataValue.json(experiment.dropped)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, png in results.figures.items():
        (figures_dir / f"{name}.png").write_bytes(png)
        metadata[name] = png_metadata(png, name)
    long = pd.concat(comparisons, ignore_index=True)
    metadata["comparisons"] = len(long)
    metadata["tables_folder"] = MetadataValue.path(str(tables_dir))
    return Output(long, metadata=metadata)


@asset(
    group_name="evaluation",
    deps=[stats_tables],
    ins={
        "qc_labels": PRESENT_PARTITIONS,
        "voxel_ratios": PRESENT_PARTITIONS,
        "segmentation_metrics": PRESENT_PARTITIONS,
        "raw_scans": AssetIn(partition_mapping=AllPartitionMapping()),
        "defaced_scans": AssetIn(partition_mapping=AllPartitionMapping()),
    },
    automation_condition=AutomationCondition.eager(),
)
def study_report(
    context: AssetExecutionContext,
    study: StudyConfig,
    study_cohort: pd.DataFrame,
    voxel_loss: pd.DataFrame,
    qc_labels: dict[str, pd.DataFrame],
    voxel_ratios: dict[str, pd.DataFrame],
    segmentation_metrics: dict[str, pd.DataFrame],
    raw_scans: LazyPartitions,
    defaced_scans: LazyPartitions,
):
    """One self-contained HTML report, ``<study>/report.html``."""
    methods = _methods(study_cohort)
    metrics = concat_partitions(segmentation_metrics)
    ratios = concat_partitions(voxel_ratios)
    qc = concat_partitions(qc_labels)
    results = study_results(metrics, methods, study.min_cases)
    registry = study.defacers()
    # Methods whose output is the original scan: never rendered into the report.
    unchanged = {BASELINE} | {
        name for name, entry in registry.items() if not entry.defacer.changes_voxels
    }
    renders: dict[str, bytes] = {}
    withheld: list[str] = []
    commands: dict[str, str] = {}
    if len(study_cohort):
        example = str(study_cohort["subject"].iloc[0])
        scan = raw_scans[example]
        outputs = {}
        for method in methods:
            key = MultiPartitionKey({"subject": example, "defacer": method})
            defaced = defaced_scans[key]
            commands[f"command {method} ({example})"] = defaced.command or "(in-process)"
            outputs[method] = defaced.image
        renders, withheld = example_renders(
            example, scan.image, outputs, scan.modality, unchanged, _face_found(qc, example)
        )
    settings = {
        "profile": study.profile,
        "seed": str(study.seed),
        "compared methods": ", ".join(methods),
        "training labels": study.label_policy,
        "evaluation reference": study.reference_policy,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    sources, _ = study.subject_sources()
    provenance: dict[str, object] = {
        **{f"version {package}": version(package) for package in PACKAGES},
        **{
            f"defacer {name}": f"{registry[name].defacer.tool} {registry[name].defacer.version()}"
            f" ({registry[name].source})"
            for name in methods
            if name in registry
        },
        **commands,
        **{
            f"sha256 {path}": digest
            for path, digest in file_sha256([source.path for source in sources]).items()
        },
    }
    effects = main_effects(ratios, metrics)
    document = render_html(
        ReportInputs(
            title=f"Defacing and OAR segmentation: {Path(study.study_dir).name}",
            settings=settings,
            cohort=study_cohort,
            qc_summary=qc_summary(qc, ratios),
            original_model=original_model_on_defaced(metrics),
            renders=renders,
            withheld_renders=withheld,
            table1=_table1(voxel_loss),
            figure2=_read(Path(study.study_dir) / "figures" / "figure2.png"),
            table2=results.table2,
            experiments=results.experiments,
            figures=results.figures,
            main_effects=effects,
            provenance=provenance,
            failed_models=failed_models(metrics),
        )
    )
    path = Path(study.study_dir) / "report.html"
    path.write_text(document, encoding="utf-8")
    return Output(
        pd.DataFrame({"main_effect": effects}),
        metadata={
            "report": MetadataValue.path(str(path.resolve())),
            "main_effects": MetadataValue.md("\n".join(f"- {line}" for line in effects)),
            "bytes": len(document.encode()),
        },
    )


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _face_found(qc: pd.DataFrame, subject: str) -> dict[str, bool]:
    """Method -> whether face QC found a face on ``subject``'s defaced scan (QC rows of
    that subject only; a method without one is absent)."""
    if qc.empty or not {"subject", "defacer", "face_detected"} <= set(qc.columns):
        return {}
    rows = qc[qc["subject"].astype(str) == subject]
    return {
        str(method): bool(found)
        for method, found in zip(rows["defacer"], rows["face_detected"], strict=True)
        if pd.notna(found)
    }
