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


@dataclass(frozen=True)
class SkinHeights:
    """The skin of two renders of one head at the same world points: the original's
    pixels of a region where it shows skin, and the defaced render's skin there."""

    before: np.ndarray
    """Original heights (mm along the view direction), all finite."""
    after: np.ndarray
    """Defaced heights at the same world points; NaN where it shows no skin."""

    @property
    def pixels(self) -> int:
        return int(self.before.size)

    @property
    def kept_fraction(self) -> float:
        """Share of pixels whose skin moved by at most :data:`SURFACE_TOLERANCE_MM` (no
        skin left counts as moved); NaN for an empty region."""
        if self.before.size == 0:
            return float("nan")
        moved = np.abs(self.after - self.before)
        return float(np.mean(np.where(np.isfinite(moved), moved <= SURFACE_TOLERANCE_MM, False)))

    @property
    def depth_correlation(self) -> float:
        """Pearson correlation where both have skin; NaN under :data:`MIN_PIXELS` or flat."""
        both = np.isfinite(self.after)
        before, after = self.before[both], self.after[both]
        if both.sum() < MIN_PIXELS or np.std(after) == 0 or np.std(before) == 0:
            return float("nan")
        return float(np.corrcoef(before, after)[0, 1])


def skin_heights(
    original: RenderedView,
    defaced: RenderedView,
    region: np.ndarray,
    world: np.ndarray | None = None,
) -> SkinHeights:
    """Compare two views from the same direction on ``region`` (bool, the original's
    pixels) where the original shows skin, point for point in world space: the renders
    are cropped to each head, so their pixel frames differ. ``world``: the original's
    :meth:`~RenderedView.pixel_world`, when already computed."""
    region = region & np.isfinite(original.height_mm)
    world = original.pixel_world() if world is None else world
    after = defaced.sample(defaced.height_mm, world[region], np.nan)
    return SkinHeights(original.height_mm[region], after)


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
    heights = skin_heights(original, defaced, face_box(original, landmarks))
    return FacialSurface(heights.kept_fraction, heights.depth_correlation, heights.pixels)
