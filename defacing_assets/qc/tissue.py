"""Where tissue is: the threshold a person's eye uses to find the skin, per modality."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from defacing_assets.imaging.volume import Volume

CT_SKIN_HU = -300.0


def tissue_threshold(volume: Volume, modality: str) -> float:
    """CT: -300 HU. MR: Otsu on the lightly smoothed intensities (air vs tissue)."""
    if modality == "CT":
        return CT_SKIN_HU
    smoothed = ndimage.gaussian_filter(volume.array.astype(np.float32), 1.0)
    return float(threshold_otsu(smoothed[::2, ::2, ::2]))


def tissue_mask(volume: Volume, modality: str, threshold: float | None = None) -> np.ndarray:
    """Boolean tissue mask on the volume's own grid (smoothed, so noise does not count)."""
    level = tissue_threshold(volume, modality) if threshold is None else threshold
    return ndimage.gaussian_filter(volume.array.astype(np.float32), 1.0) > level
