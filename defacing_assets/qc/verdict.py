"""The automated QC verdict a person used to give by eye: is the face gone?

``passed`` means no detector finds a face in any render view AND the eyes,
nose and mouth were all removed. Where the original's frontal render shows a
face, removal is judged at the features dlib finds on it (:mod:`features`:
what a viewer would recognise, no ground truth needed); the 3-D landmark
check (:mod:`landmarks`: ground truth or a registered template) is kept as a
second opinion in the ``*_3d`` columns, and decides only when the original's
frontal render shows no face. A defacer that failed or produced nothing fails
QC with that reason. When the original scan itself shows no face, the verdict
is flagged unreliable: the detectors then cannot tell a removed face from an
unseen one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from defacing_assets.cohort.scan import Scan
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.features import FEATURES, FeatureChange, feature_changes
from defacing_assets.qc.landmarks import landmarks_from_template, regions_removed
from defacing_assets.qc.render import render_surface, render_views
from defacing_assets.qc.surface import facial_surface

QC_COLUMNS = [
    "subject",
    "defacer",
    "status",
    "face_detected",
    "views_with_face",
    "eyes_removed",
    "nose_removed",
    "mouth_removed",
    "jaw_removed",
    "eyes_surface_kept",
    "nose_surface_kept",
    "mouth_surface_kept",
    "jaw_surface_kept",
    "identity_distance",
    "face_descriptor",
    "face_surface_kept",
    "face_depth_correlation",
    "original_face_detected",
    "reliable",
    "passed",
    "reason",
    "landmark_source",
    "eyes_removed_3d",
    "nose_removed_3d",
    "mouth_removed_3d",
    "landmark_source_3d",
    "labelled",
    "views",
]
RENDER_LANDMARKS = "render landmarks (dlib 68)"
"""``landmark_source`` when the features were judged on the original's frontal render."""


@dataclass
class QcVerdict:
    subject: str
    defacer: str
    status: str
    face_detected: bool
    views: dict[str, dict]
    eyes_removed: bool | None
    nose_removed: bool | None
    mouth_removed: bool | None
    identity_distance: float | None
    original_face_detected: bool
    passed: bool
    reason: str
    landmark_source: str
    """Where eyes/nose/mouth_removed were judged: :data:`RENDER_LANDMARKS`, else the
    3-D landmarks' source."""
    labelled: bool
    jaw_removed: bool | None = None
    """Render check only (None without render landmarks); not needed to pass."""
    eyes_surface_kept: float | None = None
    """Share of the feature's surface unchanged (see :mod:`features`); None without render
    landmarks."""
    nose_surface_kept: float | None = None
    mouth_surface_kept: float | None = None
    jaw_surface_kept: float | None = None
    eyes_removed_3d: bool | None = None
    """The 3-D landmark check (:mod:`landmarks`), a second opinion beside the render's."""
    nose_removed_3d: bool | None = None
    mouth_removed_3d: bool | None = None
    landmark_source_3d: str = "none"
    """Source of the 3-D landmarks: ground truth, template registration, given, or none."""
    face_surface_kept: float | None = None
    """Share of the original frontal facial surface still in place (see :mod:`surface`)."""
    face_depth_correlation: float | None = None
    face_descriptor: list[float] | None = None
    """The defaced frontal render's 128-d descriptor at the original's face (the
    re-identification probe); None when the original shows no face."""
    renders: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def reliable(self) -> bool:
        return self.original_face_detected

    def row(self) -> dict:
        """One flat table row (views as JSON text)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("renders", "views")}
        values["reliable"] = self.reliable
        values["views"] = json.dumps(self.views, sort_keys=True)
        values["face_descriptor"] = (
            None if self.face_descriptor is None else json.dumps(self.face_descriptor)
        )
        values["views_with_face"] = ",".join(n for n, v in self.views.items() if v["face_detected"])
        return {column: values[column] for column in QC_COLUMNS}

    def cli_summary(self) -> dict:
        """What ``defacing-assets qc --json`` prints."""
        return {
            "face_detected": self.face_detected,
            "views": self.views,
            "eyes_removed": self.eyes_removed,
            "nose_removed": self.nose_removed,
            "mouth_removed": self.mouth_removed,
            "jaw_removed": self.jaw_removed,
            **{f"{feature}_surface_kept": self.surface_kept(feature) for feature in FEATURES},
            "identity_distance": self.identity_distance,
            "face_surface_kept": self.face_surface_kept,
            "face_depth_correlation": self.face_depth_correlation,
            "passed": self.passed,
            "reason": self.reason,
            "reliable": self.reliable,
            "landmark_source": self.landmark_source,
            "removed_3d": self.removed_3d(),
        }

    def removed_3d(self) -> dict:
        """The 3-D landmark check's opinion and its source, JSON-ready."""
        return {
            "eyes": self.eyes_removed_3d,
            "nose": self.nose_removed_3d,
            "mouth": self.mouth_removed_3d,
            "landmark_source": self.landmark_source_3d,
        }

    def surface_kept(self, feature: str) -> float | None:
        """``<feature>_surface_kept`` for one of :data:`features.FEATURES`."""
        return getattr(self, f"{feature}_surface_kept")


def assess(
    scan: Scan,
    result: DefacingResult,
    method: str,
    detector: FaceDetector | None = None,
    landmarks: dict[str, list[float]] | None = None,
    seed: int = 0,
) -> QcVerdict:
    """QC of one defaced scan against its original; ``seed`` (the study's) drives the
    template registration that places the landmarks when none are given or known."""
    detector = detector or FaceDetector()
    original_surfaces = render_surface(scan.image, scan.modality)
    original_views = {name: view.image for name, view in original_surfaces.items()}
    original_detections = detector.detect_views(original_views)
    original_face = any(d.face_detected for d in original_detections.values())
    base = {
        "subject": scan.subject_id,
        "defacer": method,
        "status": result.status,
        "original_face_detected": original_face,
        "labelled": scan.labels is not None,
    }
    if result.status != "ok" or result.image is None:
        return QcVerdict(
            **base,
            face_detected=False,
            views={},
            eyes_removed=None,
            nose_removed=None,
            mouth_removed=None,
            identity_distance=None,
            passed=False,
            reason=f"defacing {result.status}: {result.reason}",
            landmark_source="none",
        )
    surfaces = render_surface(result.image, scan.modality)
    views = {name: view.image for name, view in surfaces.items()}
    detections = detector.detect_views(views)
    face = any(d.face_detected for d in detections.values())
    if landmarks is None and scan.landmarks is not None:
        landmarks, source_3d = scan.landmarks, "ground truth"
    elif landmarks is None:
        landmarks, source_3d = landmarks_from_template(scan.image, seed), "template registration"
    else:
        source_3d = "given"
    regions_3d = regions_removed(scan.image, result.kept_mask, landmarks, scan.modality)
    original_frontal, frontal = original_surfaces["frontal"], surfaces["frontal"]
    # The original's frontal face, found once: identity and the feature check both use it.
    face_points = detector.face_landmarks(original_frontal.image, original_detections["frontal"])
    identity, features, regions, source = None, None, regions_3d, source_3d
    if face_points is not None:
        identity = detector.identity(
            original_frontal.image, frontal.image_in_frame_of(original_frontal), face_points
        )
        features = feature_changes(original_frontal, frontal, face_points)
        regions = {region: features[region].removed for region in regions_3d}
        source = RENDER_LANDMARKS
    surface = facial_surface(original_frontal, frontal, landmarks)
    passed = not face and all(regions.values())
    reasons = (
        [f"face detected in {', '.join(n for n, d in detections.items() if d.face_detected)}"]
        if face
        else []
    )
    reasons += [
        _not_removed(region, None if features is None else features[region])
        for region, removed in regions.items()
        if not removed
    ]
    return QcVerdict(
        **base,
        face_detected=face,
        views={n: d.record() for n, d in detections.items()},
        eyes_removed=regions["eyes"],
        nose_removed=regions["nose"],
        mouth_removed=regions["mouth"],
        identity_distance=None if identity is None else identity.distance,
        face_descriptor=None if identity is None else identity.descriptor.round(6).tolist(),
        passed=passed,
        reason="; ".join(reasons) or "face removed",
        landmark_source=source,
        face_surface_kept=surface.kept_fraction,
        face_depth_correlation=surface.depth_correlation,
        jaw_removed=None if features is None else features["jaw"].removed,
        **{
            f"{feature}_surface_kept": None if features is None else features[feature].kept_fraction
            for feature in FEATURES
        },
        eyes_removed_3d=regions_3d["eyes"],
        nose_removed_3d=regions_3d["nose"],
        mouth_removed_3d=regions_3d["mouth"],
        landmark_source_3d=source_3d,
        renders=views,
    )


def _not_removed(region: str, change: FeatureChange | None) -> str:
    if change is None:
        return f"{region} not removed"
    return f"{region} not removed ({change.kept_fraction:.0%} of its surface unchanged)"


def assess_alone(
    image: Volume, modality: str, subject: str = "", detector: FaceDetector | None = None
) -> QcVerdict:
    """Detectors only, for a defaced scan without its original: regions unknown (None)."""
    detector = detector or FaceDetector()
    views = render_views(image, modality)
    detections = detector.detect_views(views)
    face = any(d.face_detected for d in detections.values())
    seen = ", ".join(n for n, d in detections.items() if d.face_detected)
    return QcVerdict(
        subject=subject,
        defacer="",
        status="ok",
        face_detected=face,
        views={n: d.record() for n, d in detections.items()},
        eyes_removed=None,
        nose_removed=None,
        mouth_removed=None,
        identity_distance=None,
        original_face_detected=True,
        passed=not face,
        reason=f"face detected in {seen}"
        if face
        else "no face detected (regions not checked: no original given)",
        landmark_source="none",
        labelled=False,
        renders=views,
    )
