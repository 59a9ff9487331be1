"""Does a surface render still show a face? Detectors whose models ship in pip packages.

Everything runs offline: dlib (``dlib-bin`` wheels) brings its HOG frontal
face detector; ``face-recognition-models`` (data only, no build step) brings the 68-point
shape predictor and the 128-d ResNet face-recognition network; OpenCV
(``opencv-python<5``: 5.x dropped ``CascadeClassifier``) brings the frontal
and profile Haar cascades, a second opinion.

Decision rule (:data:`DLIB_MIN_SCORE`, :data:`DLIB_CONFIRMED_SCORE`), set
from renders of pydeface's template and of 5 synthetic demo MR subjects,
before and after pydeface: frontal renders of intact faces score 1.1-2.3 at
upsample 1, all 30 views of the 6 defaced heads at most 0.02, while Haar
cascades fired on 4 of those 30 views (cut planes and ears look like faces
to them) and missed one intact frontal face. So a view shows a face when
dlib finds one scoring at least 0.4, or at least 0 where a Haar box
(frontal or profile) overlaps it; Haar alone never decides.

The face_recognition_models package's ``__init__`` imports ``pkg_resources``
(gone from recent setuptools), so its model files are located without
importing it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DLIB_UPSAMPLE = 1
"""Upsampling passes of dlib's detector: finds faces down to about 40 px (renders at 1 mm)."""
DLIB_MIN_SCORE = 0.4
"""A dlib detection this strong is a face on its own."""
DLIB_CONFIRMED_SCORE = 0.0
"""A weaker dlib detection is a face when a Haar cascade box overlaps it."""
DLIB_REPORT_SCORE = -0.5
"""Candidates down to this score are reported (near misses help a reviewer), never decisive."""
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBOURS = 3
HAAR_MIN_SIZE = (40, 40)
OVERLAP_IOU = 0.3
"""Intersection over union for a Haar box to confirm a dlib box."""
SAME_PERSON_DISTANCE = 0.6
"""dlib's threshold: embeddings closer than this are usually the same person."""

SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
HAAR_FRONTAL = "haarcascade_frontalface_default.xml"
HAAR_PROFILE = "haarcascade_profileface.xml"

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels."""


@dataclass(frozen=True)
class Identity:
    distance: float
    """Euclidean distance of the two descriptors."""
    descriptor: np.ndarray
    """The defaced render's 128-d descriptor at the original's face: the probe that
    re-identification matches against every subject's original."""


@dataclass(frozen=True)
class DlibFace:
    box: Box
    score: float
    detector: int
    """Which of dlib's five HOG filters fired: 0 front, 1 and 2 turned, 3 and 4 tilted."""
    accepted: bool
    """Counts toward face_detected under the module's rule."""


@dataclass(frozen=True)
class ViewDetection:
    """What the detectors saw in one render."""

    dlib_faces: tuple[DlibFace, ...]
    """Candidates scoring at least :data:`DLIB_REPORT_SCORE`, best first."""
    haar_frontal: int
    haar_profile: int
    """Profile cascade boxes on the image and its mirror (it finds one facing direction)."""
    face_detected: bool
    reason: str
    haar_boxes: tuple[Box, ...] = field(default=(), repr=False)

    @property
    def dlib_score(self) -> float | None:
        """Best dlib score, or None when dlib reported no candidate."""
        return self.dlib_faces[0].score if self.dlib_faces else None

    def record(self) -> dict[str, Any]:
        """JSON-ready summary for asset metadata and reports."""
        return {
            "face_detected": self.face_detected,
            "reason": self.reason,
            "dlib_score": None if self.dlib_score is None else round(self.dlib_score, 3),
            "dlib_faces": [
                {
                    "box": list(face.box),
                    "score": round(face.score, 3),
                    "detector": face.detector,
                    "accepted": face.accepted,
                }
                for face in self.dlib_faces
            ],
            "haar_frontal": self.haar_frontal,
            "haar_profile": self.haar_profile,
        }


def _models_folder() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "face_recognition_models is not installed (pip install face-recognition-models)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_file(name: str) -> Path:
    path = _models_folder() / name
    if not path.is_file():
        raise FileNotFoundError(f"face_recognition_models has no {name} at {path}")
    return path


def _cascade(name: str):
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise ImportError(
            f"cv2 {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped it; "
            "install opencv-python<5)"
        )
    path = Path(cv2.data.haarcascades) / name
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise FileNotFoundError(f"OpenCV could not load the Haar cascade {path}")
    return classifier


@dataclass(frozen=True)
class _Detectors:
    hog: Any
    haar_frontal: Any
    haar_profile: Any


@dataclass(frozen=True)
class _Recognition:
    shape_predictor: Any
    network: Any


@lru_cache(maxsize=1)
def _detectors() -> _Detectors:
    """Loaded once per process: the HOG detector and both cascades are small."""
    import dlib

    return _Detectors(
        hog=dlib.get_frontal_face_detector(),
        haar_frontal=_cascade(HAAR_FRONTAL),
        haar_profile=_cascade(HAAR_PROFILE),
    )


@lru_cache(maxsize=1)
def _recognition() -> _Recognition:
    """Loaded once per process and only when an embedding is asked for (about 120 MB)."""
    import dlib

    return _Recognition(
        shape_predictor=dlib.shape_predictor(str(_model_file(SHAPE_PREDICTOR))),
        network=dlib.face_recognition_model_v1(str(_model_file(RECOGNITION_MODEL))),
    )


def available() -> tuple[bool, str]:
    """Whether face detection can run here and, if not, exactly what is missing."""
    try:
        import dlib  # noqa: F401
    except ImportError as error:
        return False, f"dlib cannot be imported ({error}); pip install dlib-bin"
    try:
        for name in (SHAPE_PREDICTOR, RECOGNITION_MODEL):
            _model_file(name)
        import cv2  # noqa: F401

        _detectors()
    except (ImportError, FileNotFoundError, OSError) as error:
        return False, str(error)
    return True, ""


def _iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _as_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image.mean(axis=2)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale or (H, W, 3) image, got shape {image.shape}")
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8))


class FaceDetector:
    """dlib HOG + Haar cascades on renders, dlib's 128-d embedding for re-identification."""

    def __init__(self, upsample: int = DLIB_UPSAMPLE) -> None:
        self.upsample = upsample

    def _haar(self, gray: np.ndarray) -> tuple[list[Box], int, int]:
        import cv2

        models = _detectors()
        options = {
            "scaleFactor": HAAR_SCALE_FACTOR,
            "minNeighbors": HAAR_MIN_NEIGHBOURS,
            "minSize": HAAR_MIN_SIZE,
        }
        width = gray.shape[1]
        frontal = [tuple(r) for r in models.haar_frontal.detectMultiScale(gray, **options)]
        profile = [tuple(r) for r in models.haar_profile.detectMultiScale(gray, **options)]
        mirrored = models.haar_profile.detectMultiScale(cv2.flip(gray, 1), **options)
        profile += [(width - x - w, y, w, h) for x, y, w, h in mirrored]
        boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in frontal + profile]
        return boxes, len(frontal), len(profile)

    def detect(self, image: np.ndarray) -> ViewDetection:
        """Run every detector on one render and decide by the module's rule."""
        gray = _as_gray(image)
        rects, scores, indices = _detectors().hog.run(gray, self.upsample, DLIB_REPORT_SCORE)
        haar_boxes, n_frontal, n_profile = self._haar(gray)
        faces = []
        for rect, score, index in zip(rects, scores, indices, strict=True):
            box = (int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom()))
            confirmed = any(_iou(box, other) >= OVERLAP_IOU for other in haar_boxes)
            accepted = score >= DLIB_MIN_SCORE or (confirmed and score >= DLIB_CONFIRMED_SCORE)
            faces.append(DlibFace(box, float(score), int(index), bool(accepted)))
        faces.sort(key=lambda face: face.score, reverse=True)
        accepted = [face for face in faces if face.accepted]
        if not accepted:
            reason = "no dlib face"
            if faces:
                reason += f" (best {faces[0].score:.2f} < {DLIB_MIN_SCORE}, no Haar confirmation)"
        elif accepted[0].score >= DLIB_MIN_SCORE:
            reason = f"dlib score {accepted[0].score:.2f} >= {DLIB_MIN_SCORE}"
        else:
            reason = f"dlib score {accepted[0].score:.2f} confirmed by an overlapping Haar box"
        return ViewDetection(
            dlib_faces=tuple(faces),
            haar_frontal=n_frontal,
            haar_profile=n_profile,
            face_detected=bool(accepted),
            reason=reason,
            haar_boxes=tuple(haar_boxes),
        )

    def detect_views(self, images: dict[str, np.ndarray]) -> dict[str, ViewDetection]:
        return {name: self.detect(image) for name, image in images.items()}

    def face_landmarks(
        self, image: np.ndarray, detection: ViewDetection | None = None
    ) -> Any | None:
        """dlib's 68 landmarks of the largest accepted face; None if no face is accepted.
        ``detection``: :meth:`detect`'s result on this image, when already run (a render is
        searched once)."""
        import dlib

        gray = _as_gray(image)
        detection = self.detect(gray) if detection is None else detection
        accepted = [face for face in detection.dlib_faces if face.accepted]
        if not accepted:
            return None
        left, top, right, bottom = max(
            accepted, key=lambda face: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1])
        ).box
        return _recognition().shape_predictor(gray, dlib.rectangle(left, top, right, bottom))

    def descriptor(self, image: np.ndarray, landmarks: Any) -> np.ndarray:
        """128-d descriptor of the face chip that ``landmarks`` align, whatever the image
        shows there: at an original's landmarks it describes what a defaced render leaves
        of that face, even where no detector finds one."""
        gray = _as_gray(image)
        rgb = np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
        return np.asarray(
            _recognition().network.compute_face_descriptor(rgb, landmarks), dtype=np.float64
        )

    def embedding(self, image: np.ndarray) -> np.ndarray | None:
        """128-d descriptor of the largest accepted face; None if none."""
        landmarks = self.face_landmarks(image)
        return None if landmarks is None else self.descriptor(image, landmarks)

    def identity(
        self, original_image: np.ndarray, defaced_image: np.ndarray, landmarks: Any | None = None
    ) -> Identity | None:
        """The defaced render's descriptor at the original's face (both images in the same
        pixel frame: :meth:`RenderedView.image_in_frame_of`) and its distance to the
        original's. ``landmarks``: the original's (:meth:`face_landmarks`), when already
        found; searched for otherwise. None only when the original shows no face."""
        if landmarks is None:
            landmarks = self.face_landmarks(original_image)
        if landmarks is None:
            return None
        original = self.descriptor(original_image, landmarks)
        defaced = self.descriptor(defaced_image, landmarks)
        return Identity(float(np.linalg.norm(original - defaced)), defaced)

    def identity_distance(
        self, original_image: np.ndarray, defaced_image: np.ndarray
    ) -> float | None:
        """Distance of :meth:`identity`: below :data:`SAME_PERSON_DISTANCE` the defaced
        render would likely be matched to the original (re-identification risk)."""
        identity = self.identity(original_image, defaced_image)
        return None if identity is None else identity.distance
