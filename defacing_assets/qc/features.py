"""Which facial features did a defacer change? Judged where the original's render shows them.

The 3-D landmarks of :mod:`landmarks` are ground truth only on synthetic heads;
on a real head they come from a registered template, which can miss a feature
by a centimetre. A face is recognised from its picture, so the features are
found on the picture: dlib's 68-point predictor (``face_recognition_models``,
:meth:`FaceDetector.face_landmarks`) places the jaw line, eyes, nose and mouth
on the original's frontal render. Each feature's region is the filled convex
hull of its points grown by :data:`FEATURE_MARGIN_MM` (the jaw: a band
:data:`JAW_BAND_MM` wide along its line), on the pixels where the original
shows skin. The defaced render is compared at those pixels' world points
(:func:`surface.skin_heights`), so nothing is asked of a detector on the
defaced render: a feature is removed when most of its surface moved, whether
or not what is left still looks like a face to anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from defacing_assets.qc.render import RenderedView
from defacing_assets.qc.surface import skin_heights

FEATURE_POINTS: dict[str, range] = {
    "jaw": range(0, 17),
    "eye_right": range(36, 42),
    "eye_left": range(42, 48),
    "nose": range(27, 36),
    "mouth": range(48, 68),
}
"""Indices in dlib's 68-point scheme. Eyes are named for the patient: the frontal render
shows the patient's right on the image's left, where dlib numbers 36-41."""
FEATURES = ("eyes", "nose", "mouth", "jaw")
"""What the verdict reports; ``eyes`` is both eyes together."""
FEATURE_MARGIN_MM = 3.0
"""Hulls grow by this much: dlib puts points on the lid, nostril and lip edges, and the
relief around them (lids, alae, the lips' border) is part of the feature; it also absorbs
the predictor's error of a pixel or two."""
JAW_BAND_MM = 6.0
"""Width of the band along the jaw line (half of it each side)."""
REMOVED_BELOW = 0.5
"""A feature is removed when less than this share of its surface is unchanged: most of it
changed. A rim of untouched skin inside the margin does not save a carved feature, and a
nick on a feature that is mostly intact does not count as its removal."""


@dataclass(frozen=True)
class FeatureChange:
    kept_fraction: float
    """Share of the feature's skin pixels whose skin moved by at most
    :data:`surface.SURFACE_TOLERANCE_MM`; NaN when the region has no skin."""
    pixels: int
    """The feature's pixels with skin on the original."""
    removed: bool
    """Kept fraction below :data:`REMOVED_BELOW`; a region without skin is not removed
    (nothing was seen to change)."""


def landmark_points(landmarks: Any) -> np.ndarray:
    """(68, 2) float pixel points (x = column, y = row, as dlib gives them) of a dlib
    ``full_object_detection`` or anything array-like of that shape."""
    if hasattr(landmarks, "parts"):
        return np.array([[point.x, point.y] for point in landmarks.parts()], dtype=float)
    points = np.asarray(landmarks, dtype=float)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) points, got shape {points.shape}")
    return points


def _grown(seed: np.ndarray, grow_mm: float, spacing_mm: float) -> np.ndarray:
    if not seed.any():
        return seed
    return ndimage.distance_transform_edt(~seed) * spacing_mm <= grow_mm


def feature_regions(view: RenderedView, landmarks: Any) -> dict[str, np.ndarray]:
    """bool (rows, cols) per entry of :data:`FEATURE_POINTS` on ``view``'s pixels, the
    view on which ``landmarks`` were found (skin or not)."""
    points = landmark_points(landmarks)
    rows, cols = view.image.shape
    regions = {}
    for name, indices in FEATURE_POINTS.items():
        picked = points[list(indices)]
        canvas = Image.new("1", (cols, rows), 0)
        draw = ImageDraw.Draw(canvas)
        if name == "jaw":
            draw.line([tuple(p) for p in picked], fill=1, width=1)
            grow = JAW_BAND_MM / 2
        else:
            try:
                outline = picked[ConvexHull(picked).vertices]
                draw.polygon([tuple(p) for p in outline], fill=1, outline=1)
            except QhullError:  # points on a line: a closed eye, say
                draw.line([tuple(p) for p in picked], fill=1, width=1)
            grow = FEATURE_MARGIN_MM
        regions[name] = _grown(np.asarray(canvas, dtype=bool), grow, view.spacing_mm)
    return regions


def _change(kept: float, pixels: int) -> FeatureChange:
    return FeatureChange(kept, pixels, bool(pixels > 0 and kept < REMOVED_BELOW))


def feature_changes(
    original: RenderedView, defaced: RenderedView, landmarks: Any
) -> dict[str, FeatureChange]:
    """Per feature of :data:`FEATURE_POINTS` plus ``eyes`` (both eyes: removed only when
    each is; its kept fraction is the better-kept eye's), for two renders from the same
    direction; ``landmarks`` are the original's, on the original's pixels."""
    world = original.pixel_world()
    changes = {}
    for name, region in feature_regions(original, landmarks).items():
        heights = skin_heights(original, defaced, region, world)
        changes[name] = _change(heights.kept_fraction, heights.pixels)
    eyes = (changes["eye_right"], changes["eye_left"])
    seen = [eye.kept_fraction for eye in eyes if eye.pixels]
    changes["eyes"] = FeatureChange(
        max(seen) if seen else float("nan"),
        sum(eye.pixels for eye in eyes),
        all(eye.removed for eye in eyes),
    )
    return changes
