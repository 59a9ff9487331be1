"""What ingest produces for one subject: image, labels and where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from defacing_assets.cohort.labels import LABEL_NAMES
from defacing_assets.imaging.volume import Volume

Modality = Literal["MR", "CT"]
LANDMARK_NAMES = ("eye_left", "eye_right", "nose_tip", "mouth")


@dataclass(eq=False)
class Scan:
    """One subject's scan.

    Attributes:
        subject_id: partition-safe id.
        image: the image volume.
        labels: 9-class label map on the image grid, or None for unlabelled
            data (e.g. HECKTOR CT), which label-dependent stages skip.
        modality: "MR" or "CT" (decides thresholds such as the skin surface).
        landmarks: face landmarks in world mm (synthetic cohort ground truth),
            keyed by :data:`LANDMARK_NAMES`, or None when unknown.
        absent_structures: OAR names the source did not contain.
        source: provenance (format and file paths).
    """

    subject_id: str
    image: Volume
    labels: Volume | None
    modality: Modality = "MR"
    landmarks: dict[str, list[float]] | None = None
    absent_structures: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def voxels_per_oar(self) -> dict[str, int]:
        """Voxel count of every OAR (0 for absent ones); empty without labels."""
        if self.labels is None:
            return {}
        counts = np.bincount(self.labels.array.astype(np.int64).ravel(), minlength=9)
        return {name: int(counts[label]) for label, name in LABEL_NAMES.items()}
