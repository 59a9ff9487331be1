"""Cohorts: the label table, readers for NIfTI/HECKTOR/DICOM data, the synthetic cohort."""
