import numpy as np
import pytest

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.pydeface import Pydeface
from defacing_assets.qc.landmarks import landmarks_from_template, regions_removed


@pytest.fixture(scope="module")
def subject():
    return generate_subject("L1", 1, seed=4, profile="demo")[0]


def test_template_landmarks_carried_into_a_subject_land_near_the_truth(subject):
    carried = landmarks_from_template(subject.image, seed=0)
    for name, truth in subject.landmarks.items():
        assert np.linalg.norm(np.array(carried[name]) - truth) < 8.0, name


def test_regions_judged_against_what_was_changed(subject):
    image = subject.image
    untouched = image.with_array(np.ones(image.shape, np.uint8))
    assert regions_removed(image, untouched, subject.landmarks, "MR") == {
        "eyes": False,
        "nose": False,
        "mouth": False,
    }
    forehead_only = np.ones(image.shape, np.uint8)
    top = int(image.world_to_voxel(subject.landmarks["eye_left"])[0, 2]) + 6
    forehead_only[:, :, top:] = 0
    assert not any(
        regions_removed(image, image.with_array(forehead_only), subject.landmarks, "MR").values()
    )
    defaced = Pydeface().deface(image)
    assert regions_removed(image, defaced.kept_mask, subject.landmarks, "MR") == {
        "eyes": True,
        "nose": True,
        "mouth": True,
    }


def test_one_eye_left_is_not_eyes_removed(subject):
    image = subject.image
    kept = np.ones(image.shape, np.uint8)
    for name in ("nose_tip", "mouth", "eye_left"):
        centre = np.round(image.world_to_voxel(subject.landmarks[name])[0]).astype(int)
        kept[tuple(slice(c - 6, c + 7) for c in centre)] = 0
    verdict = regions_removed(image, image.with_array(kept), subject.landmarks, "MR")
    assert verdict == {"eyes": False, "nose": True, "mouth": True}
