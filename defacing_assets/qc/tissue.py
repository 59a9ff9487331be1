"""Where tissue is on a scan's own grid, with the same threshold the renders use."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.render import skin_threshold


def _smoothed(volume: Volume) -> np.ndarray:
    return ndimage.gaussian_filter(volume.array.astype(np.float32), 1.0)


def tissue_threshold(volume: Volume, modality: str) -> float:
    """CT: -300 HU. MR: Otsu on the lightly smoothed intensities (air vs tissue)."""
    return skin_threshold(_smoothed(volume), modality)


def tissue_mask(volume: Volume, modality: str, threshold: float | None = None) -> np.ndarray:
    """Boolean tissue mask on the volume's own grid (smoothed, so noise does not count)."""
    smoothed = _smoothed(volume)
    level = skin_threshold(smoothed, modality) if threshold is None else threshold
    return smoothed > level
