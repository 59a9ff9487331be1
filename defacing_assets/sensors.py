"""Sensors: new subjects and newly available defacers become partitions.

Automation (``AutomationCondition.eager()`` on the assets, evaluated by the
automation sensor) then requests exactly the partitions that are missing.
"""

import os

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, sensor

from defacing_assets.cohort.sources import (
    _HECKTOR_SUFFIX,
    duplicate_problems,
    id_problems,
    validate_source,
)
from defacing_assets.partitions import defacers_partitions, subjects_partitions
from defacing_assets.resources import StudyConfig


def new_valid_subjects(study: StudyConfig, existing: set[str], log) -> list[str]:
    """Ids in the data folder that are not partitions yet and may become ones.

    Unsafe ids, case-insensitive clashes, subjects whose files fail
    validation and subjects that are another subject again (a symlinked or
    copied folder: same files or same voxels and affine, as an existing or
    another acceptable new subject; an existing subject is always the one
    kept) are refused with a logged reason, naming both for a copy;
    everything else is returned. Refusing here, before a partition exists,
    is what keeps one patient out of two folds: the split only sees partitions.
    """
    sources, skipped = study.subject_sources()
    for note in skipped:
        log.info(f"ignored {note}")
    existing_folded = {subject_id.lower(): subject_id for subject_id in existing}
    unsafe = id_problems(sources)
    candidates = []
    for source in sources:
        subject_id = source.subject_id
        if subject_id in existing:
            continue
        if subject_id in unsafe:
            log.warning(f"refused {source.path}: {unsafe[subject_id]}")
            continue
        if subject_id.lower() in existing_folded:
            log.warning(
                f"refused {source.path}: subject id {subject_id!r} collides case-insensitively "
                f"with existing subject {existing_folded[subject_id.lower()]!r}"
            )
            continue
        problems = validate_source(source, study.roi_names)
        if problems:
            log.warning(f"refused {subject_id}: " + "; ".join(problems))
            continue
        candidates.append(source)
    if not candidates:
        return []
    pool = [source for source in sources if source.subject_id in existing] + candidates
    duplicates = duplicate_problems(pool, keep_first=existing)
    new = []
    for source in candidates:
        if source.subject_id in duplicates:
            log.warning(f"refused {source.path}: {duplicates[source.subject_id]}")
        else:
            new.append(source.subject_id)
    return new


def listed_ids(data_root: str) -> set[str] | None:
    """The subject ids the data folder's entry names would give, from one listing.

    No file of a subject is looked at, so a tick over thousands of known subjects
    costs one ``scandir``; ``None`` when the folder cannot be listed.
    """
    try:
        with os.scandir(data_root) as entries:
            return {
                entry.name[: -len(_HECKTOR_SUFFIX)]
                if entry.name.endswith(_HECKTOR_SUFFIX) and entry.is_file()
                else entry.name
                for entry in entries
                if not entry.name.startswith(".")
            }
    except OSError:
        return None


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def subject_discovery_sensor(context: SensorEvaluationContext, study: StudyConfig):
    """Add valid new subjects as partitions; log why any other entry is refused.

    When every entry of the data folder is already a partition, the tick stops
    after one directory listing (see ``benchmarks/RESULTS.md``, partition scale);
    any other entry (new, refused, stray) leads to the full discovery below.
    """
    existing = set(context.instance.get_dynamic_partitions(subjects_partitions.name))
    listed = listed_ids(study.data_root)
    if listed == set():
        return SensorResult(skip_reason=f"no subjects: the data folder {study.data_root} is empty")
    if listed is not None and listed <= existing:
        return SensorResult(skip_reason="no new subjects: every data folder entry is a partition")
    new = new_valid_subjects(study, existing, context.log)  # a missing data folder fails
    if not new:
        return SensorResult(skip_reason="no new valid subjects")
    context.log.info(f"adding subjects {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[subjects_partitions.build_add_request(new)])


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def defacer_registry_sensor(context: SensorEvaluationContext, study: StudyConfig):
    """Add every registered defacer that can run here and is not yet a partition."""
    existing = set(context.instance.get_dynamic_partitions(defacers_partitions.name))
    new = []
    for name, entry in sorted(study.defacers().items()):  # a bad defacers.yaml fails, by line
        if name in existing:
            continue
        ready, why = entry.defacer.available()
        if ready:
            new.append(name)
        elif entry.source.startswith("builtin"):  # a study need not install every tool
            context.log.debug(f"defacer {name} ({entry.source}) unavailable: {why}")
        else:  # one the user added: say why it does not run
            context.log.warning(f"defacer {name} ({entry.source}) unavailable: {why}")
    if not new:
        return SensorResult(skip_reason="no newly available defacers")
    context.log.info(f"adding defacers {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[defacers_partitions.build_add_request(new)])
