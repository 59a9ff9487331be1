"""Partitions: subjects and defacers are dynamic, folds static.

Keys of multi-dimensional partitions are built with ``MultiPartitionKey`` and
read with ``keys_by_dimension``; subject ids are validated (see
``cohort.sources.subject_id_problem``) before they become partitions.
"""

from __future__ import annotations

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

N_FOLDS = 5

subjects_partitions = DynamicPartitionsDefinition(name="subjects")
defacers_partitions = DynamicPartitionsDefinition(name="defacers")
folds_partitions = StaticPartitionsDefinition([str(fold) for fold in range(N_FOLDS)])

subject_defacer_partitions = MultiPartitionsDefinition(
    {"subject": subjects_partitions, "defacer": defacers_partitions}
)

DIMENSION_NAMES = {"subjects": "subject", "defacers": "defacer"}
"""Folder names used by storage for single-dimension partitions."""

fold_defacer_partitions = MultiPartitionsDefinition(
    {"fold": folds_partitions, "defacer": defacers_partitions}
)
"""One model per cross-validation fold and training method."""

train_eval_partitions = MultiPartitionsDefinition(
    {"train_defacer": defacers_partitions, "eval_defacer": defacers_partitions}
)
"""One cell of the study's train x evaluation matrix (Table 2)."""
