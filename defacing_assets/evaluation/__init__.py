"""Evaluation: voxel loss, the study cohort and folds, metrics, statistics, tables and figures."""
