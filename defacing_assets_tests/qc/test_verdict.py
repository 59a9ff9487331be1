"""QC verdicts agree with the ground truth of the synthetic cohort."""

import json

import numpy as np
import pytest

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.base import DefacingResult
from defacing_assets.defacers.original import Original
from defacing_assets.defacers.pydeface import Pydeface
from defacing_assets.qc.verdict import assess


@pytest.fixture(scope="module")
def subject():
    return generate_subject("V1", 0, seed=0, profile="demo")[0]


def _forehead_only(scan) -> DefacingResult:
    """A deliberately weak defacer: zeroes everything above the eyebrows only."""
    image = scan.image
    kept = np.ones(image.shape, dtype=np.uint8)
    brow = int(image.world_to_voxel(scan.landmarks["eye_left"])[0, 2]) + 5
    kept[:, :, brow:] = 0
    return DefacingResult(
        image.with_array(image.array * kept), image.with_array(kept), "ok", "", "weak", "0", "", 0.0
    )


def test_original_shows_a_face_and_fails(subject):
    verdict = assess(subject, Original().deface(subject.image), "original")
    assert verdict.face_detected and not verdict.passed
    assert verdict.original_face_detected and verdict.reliable
    assert verdict.identity_distance == pytest.approx(0.0, abs=1e-6)
    assert len(json.loads(verdict.row()["face_descriptor"])) == 128


def test_pydeface_passes_with_every_region_removed(subject):
    verdict = assess(subject, Pydeface().deface(subject.image), "pydeface")
    assert verdict.passed, verdict.reason
    assert (verdict.eyes_removed, verdict.nose_removed, verdict.mouth_removed) == (True,) * 3
    # No face is found on pydeface's renders, yet identity is measured at the original's face.
    assert verdict.identity_distance is not None and verdict.identity_distance > 0.3
    assert set(verdict.renders) == {
        "frontal",
        "oblique_left",
        "oblique_right",
        "profile_left",
        "profile_right",
    }


def test_forehead_only_defacer_fails(subject):
    verdict = assess(subject, _forehead_only(subject), "weak")
    assert not verdict.passed
    assert not verdict.eyes_removed and not verdict.nose_removed and not verdict.mouth_removed


def test_failed_defacing_fails_qc_with_the_reason(subject):
    failed = DefacingResult(None, None, "failed", "registration diverged", "x", "1", "", 0.0)
    verdict = assess(subject, failed, "x")
    assert not verdict.passed and verdict.reason == "defacing failed: registration diverged"
    assert verdict.row()["status"] == "failed"
