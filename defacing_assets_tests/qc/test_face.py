"""Face detection on renders: the template shows a face, pydeface's output does not."""

import dataclasses
import json

import numpy as np
import pytest

from defacing_assets.cohort.phantom import template_path
from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.pydeface import Pydeface
from defacing_assets.imaging import load_volume
from defacing_assets.qc import face
from defacing_assets.qc.features import feature_changes, feature_regions
from defacing_assets.qc.render import render_surface, render_views

AVAILABLE, WHY_NOT = face.available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"face detection unavailable: {WHY_NOT}")


@pytest.fixture(scope="module")
def detector():
    return face.FaceDetector()


@pytest.fixture(scope="module")
def template():
    return load_volume(str(template_path()))


@pytest.fixture(scope="module")
def template_views(template):
    return render_views(template, "MR")


@pytest.fixture(scope="module")
def defaced_template(template):
    result = Pydeface().deface(template)
    assert result.status == "ok", result.reason
    return result.image


@pytest.fixture(scope="module")
def defaced_template_views(defaced_template):
    return render_views(defaced_template, "MR")


@pytest.fixture(scope="module")
def template_frontal(template):
    return render_surface(template, "MR", views=("frontal",))["frontal"]


@pytest.fixture(scope="module")
def template_face_points(detector, template_frontal):
    points = detector.face_landmarks(template_frontal.image)
    assert points is not None and points.num_parts == 68
    return points


@pytest.fixture(scope="module")
def synthetic_scans():
    return [generate_subject(f"F{i}", i, seed=0, profile="demo")[0] for i in range(3)]


def _frontal(volume):
    return render_views(volume, "MR", views=("frontal",))["frontal"]


def test_models_load_from_pip_packages():
    assert (AVAILABLE, WHY_NOT) == (True, "")


def test_template_frontal_render_shows_a_face_to_dlib_alone(detector, template_views):
    detection = detector.detect(template_views["frontal"])
    assert detection.face_detected, detection.reason
    assert detection.dlib_score >= face.DLIB_MIN_SCORE, "no Haar confirmation needed"
    assert detection.dlib_faces[0].detector == 0, "the upright frontal filter fired"


def test_no_view_of_the_defaced_template_shows_a_face(detector, defaced_template_views):
    for name, image in defaced_template_views.items():
        detection = detector.detect(image)
        assert not detection.face_detected, f"{name}: {detection.record()}"


def test_synthetic_originals_show_a_face(detector, synthetic_scans):
    # Measured: 5/5 (seed 0), 5/5 (seed 5), 8/10 (seed 1) demo MR subjects; seed 0 scores >= 1.
    for scan in synthetic_scans:
        detection = detector.detect(_frontal(scan.image))
        assert detection.face_detected, f"{scan.subject_id}: {detection.record()}"


def test_noise_does_not_change_identity(detector, synthetic_scans):
    image = synthetic_scans[0].image
    rng = np.random.default_rng(1)
    noisy = image.array + rng.normal(0, 12.0, image.shape)  # 3 % of soft tissue
    distance = detector.identity_distance(
        _frontal(image), _frontal(image.with_array(noisy.astype(np.float32)))
    )
    assert distance is not None and distance < face.SAME_PERSON_DISTANCE


def test_identity_is_measured_at_the_original_face_even_where_no_face_is_found(
    detector, template_frontal, template_face_points, defaced_template
) -> None:
    """The defaced render is described at the original's landmarks, in the original's pixel
    frame: a method that hides the face from the detector still gets a distance (measured:
    0.60 for pydeface on its template)."""
    original = template_frontal
    defaced = render_surface(defaced_template, "MR", views=("frontal",))
    in_frame = defaced["frontal"].image_in_frame_of(original)
    assert in_frame.shape == original.image.shape
    assert detector.embedding(in_frame) is None
    identity = detector.identity(original.image, in_frame)
    assert identity.descriptor.shape == (128,) and np.isfinite(identity.descriptor).all()
    assert identity.distance > 0.5
    given = detector.identity(original.image, in_frame, template_face_points)
    assert given.distance == pytest.approx(identity.distance), "the same face, found once"
    # The render-landmark check, at the same landmarks: pydeface takes each feature's surface.
    changes = feature_changes(original, defaced["frontal"], template_face_points)
    for feature in ("eyes", "nose", "mouth"):
        assert changes[feature].removed, (feature, changes[feature])
        assert changes[feature].pixels > 50


def test_every_feature_of_an_intact_render_is_kept(template_frontal, template_face_points):
    changes = feature_changes(template_frontal, template_frontal, template_face_points)
    assert set(changes) == {"jaw", "eye_right", "eye_left", "eyes", "nose", "mouth"}
    for name, change in changes.items():
        assert change.kept_fraction == 1.0 and not change.removed and change.pixels > 50, name


def test_flattening_the_nose_changes_the_nose_not_the_eyes(template_frontal, template_face_points):
    """Edited height maps (no rendering): a feature counts as removed only when most of
    its own surface moved, and the eyes only when both eyes did."""
    regions = feature_regions(template_frontal, template_face_points)
    height = template_frontal.height_mm.copy()
    nose = regions["nose"] & np.isfinite(height)
    height[nose] = np.nanmin(height[nose])  # the nose pressed flat into the face
    left_eye = regions["eye_left"] & np.isfinite(height)
    height[left_eye] -= 5.0
    edited = dataclasses.replace(template_frontal, height_mm=height)
    changes = feature_changes(template_frontal, edited, template_face_points)
    assert changes["nose"].removed and changes["nose"].kept_fraction < 0.2
    assert changes["eye_left"].removed and not changes["eye_right"].removed
    assert not changes["eyes"].removed, "one eye left is not eyes removed"
    assert changes["eye_right"].kept_fraction > 0.8
    assert changes["mouth"].kept_fraction > 0.8 and not changes["mouth"].removed
    assert not changes["jaw"].removed


def test_identity_is_undefined_when_the_original_shows_no_face(detector, template_views):
    blank = np.zeros_like(template_views["frontal"])
    assert detector.identity(blank, template_views["frontal"]) is None
    assert detector.identity_distance(blank, template_views["frontal"]) is None


def test_blank_image_and_record(detector):
    detection = detector.detect(np.zeros((120, 100), dtype=np.uint8))
    assert not detection.face_detected and detection.dlib_score is None
    record = json.loads(json.dumps(detection.record()))
    assert record["face_detected"] is False and record["haar_frontal"] == 0
    rgb = detector.detect(np.zeros((120, 100, 3), dtype=np.uint8))
    assert not rgb.face_detected
    with pytest.raises(ValueError, match="2-D"):
        detector.detect(np.zeros((2, 3, 4, 5)))


def test_missing_model_files_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(face, "_models_folder", lambda: tmp_path)
    ok, reason = face.available()
    assert not ok and face.SHAPE_PREDICTOR in reason
