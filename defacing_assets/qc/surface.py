"""How much of the original facial surface survives defacing, from frontal depth maps.

The detectors answer "is there still a face?"; this answers "how much of
*this patient's* face is still there?", which is what a reconstruction attack
would start from. Both scans are rendered from the front (:mod:`render`); the
face region is the box around the eye, nose and mouth landmarks grown by
:data:`FACE_MARGIN_MM`. Within it, on the pixels where the original shows skin:

- ``kept_fraction``: share of pixels whose skin moved by at most
  :data:`SURFACE_TOLERANCE_MM` (a pixel with no skin left counts as moved);
- ``depth_correlation``: Pearson correlation of the two depth maps where both
  have skin (1 = same relief; NaN when fewer than :data:`MIN_PIXELS` or a flat map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defacing_assets.qc.render import RenderedView

SURFACE_TOLERANCE_MM = 1.5
FACE_MARGIN_MM = 15.0
MIN_PIXELS = 25


@dataclass(frozen=True)
class FacialSurface:
    kept_fraction: float
    depth_correlation: float
    pixels: int
    """Face-region pixels with skin on the original."""


def face_box(view: RenderedView, landmarks: dict[str, list[float]]) -> np.ndarray:
    """bool (rows, cols): the landmarks' bounding box on the view, grown by the margin."""
    projected = view.project(np.array(list(landmarks.values()), dtype=float))
    margin = FACE_MARGIN_MM / view.spacing_mm
    low = np.floor(projected[:, :2].min(axis=0) - margin).astype(int)
    high = np.ceil(projected[:, :2].max(axis=0) + margin).astype(int)
    box = np.zeros(view.image.shape, dtype=bool)
    low = np.maximum(low, 0)
    box[low[0] : max(high[0] + 1, 0), low[1] : max(high[1] + 1, 0)] = True
    return box


def facial_surface(
    original: RenderedView, defaced: RenderedView, landmarks: dict[str, list[float]]
) -> FacialSurface:
    """Compare two frontal views of the same scan inside the face region."""
    region = face_box(original, landmarks) & np.isfinite(original.height_mm)
    pixels = int(region.sum())
    if pixels == 0:
        return FacialSurface(float("nan"), float("nan"), 0)
    before = original.height_mm[region]
    after = defaced.sample(defaced.height_mm, original.pixel_world()[region], np.nan)
    moved = np.abs(after - before)
    kept = float(np.mean(np.where(np.isfinite(moved), moved <= SURFACE_TOLERANCE_MM, False)))
    both = np.isfinite(after)
    correlation = float("nan")
    if both.sum() >= MIN_PIXELS and np.std(after[both]) > 0 and np.std(before[both]) > 0:
        correlation = float(np.corrcoef(before[both], after[both])[0, 1])
    return FacialSurface(kept, correlation, pixels)
