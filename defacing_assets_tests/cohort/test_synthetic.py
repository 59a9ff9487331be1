import json

import numpy as np
import pytest
from scipy import ndimage

from defacing_assets.cohort.face_shape import FEATURES, face_displacement
from defacing_assets.cohort.phantom import NECK_MM, head_phantom
from defacing_assets.cohort.sources import discover_subjects, read_scan
from defacing_assets.cohort.synthetic import (
    OAR_SPECS,
    _draw_parameters,
    generate_subject,
    write_cohort,
)
from defacing_assets.profiles import get_profile

SLACK = 0.10
"""Discretisation at coarse spacing and the elastic warp move volumes by a few percent."""


@pytest.fixture(scope="module")
def demo_subject():
    scan, params = generate_subject("SYN001", 0, seed=11, profile="demo")
    return scan, params


def _body(scan):
    """Inside the skin: smoothed image above a quarter of soft tissue, holes filled."""
    smoothed = ndimage.gaussian_filter(scan.image.array.astype(float), 1.0)
    body = smoothed > 100
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return body


def test_same_seed_and_profile_give_identical_files(tmp_path):
    write_cohort(tmp_path / "a", 1, seed=3, profile="ci")
    write_cohort(tmp_path / "b", 1, seed=3, profile="ci")
    write_cohort(tmp_path / "c", 1, seed=4, profile="ci")
    names = ["image.nii.gz", "label.nii.gz", "landmarks.json", "subject.json"]
    for name in names:
        assert (tmp_path / "a/SYN001" / name).read_bytes() == (
            tmp_path / "b/SYN001" / name
        ).read_bytes()
    assert (tmp_path / "a/SYN001/image.nii.gz").read_bytes() != (
        tmp_path / "c/SYN001/image.nii.gz"
    ).read_bytes()


def test_cohort_is_read_by_the_nifti_reader_with_parameters_recorded(ci_cohort):
    sources, skipped = discover_subjects(ci_cohort)
    assert [s.subject_id for s in sources] == ["SYN001", "SYN002"] and skipped == []
    scan = read_scan(sources[0])
    assert scan.modality == "MR" and scan.absent_structures == []
    assert set(scan.landmarks) == {"eye_left", "eye_right", "nose_tip", "mouth"}
    record = json.loads((ci_cohort / "SYN001" / "subject.json").read_text())
    assert record["synthetic"]["seed"] == 7
    assert set(record["synthetic"]["parameters"]["oars"]) == set(OAR_SPECS)


@pytest.mark.parametrize("profile", ["ci", "demo"])
def test_oar_volumes_in_realistic_ranges(profile):
    for index in range(3):
        scan, _ = generate_subject("S", index, seed=5, profile=profile)
        for name, voxels in scan.voxels_per_oar().items():
            low, high = OAR_SPECS[name].volume_ml
            volume = voxels * scan.image.voxel_volume_ml
            assert low * (1 - SLACK) <= volume <= high * (1 + SLACK), (profile, index, name, volume)


def test_every_oar_inside_the_body(demo_subject):
    scan, _ = demo_subject
    body = _body(scan)
    oars = scan.labels.array > 0
    assert np.count_nonzero(oars & ~body) <= 0.01 * np.count_nonzero(oars)


def test_landmarks_lie_on_the_skin_surface(demo_subject):
    scan, _ = demo_subject
    body = _body(scan)
    surface = body & ~ndimage.binary_erosion(body)
    surface_points = scan.image.voxel_to_world(np.argwhere(surface))
    for name, point in scan.landmarks.items():
        distance = np.min(np.linalg.norm(surface_points - np.array(point), axis=1))
        assert distance <= 1.5 * max(scan.image.spacing), (name, distance)


def test_face_landmarks_are_anatomically_ordered(demo_subject):
    scan, _ = demo_subject
    marks = {name: np.array(p) for name, p in scan.landmarks.items()}
    assert marks["eye_left"][0] < marks["nose_tip"][0] < marks["eye_right"][0]
    assert marks["mouth"][2] < marks["nose_tip"][2] < marks["eye_left"][2]
    assert marks["nose_tip"][1] > marks["eye_left"][1]


def test_spacing_and_head_and_neck_field_of_view(demo_subject):
    scan, params = demo_subject
    assert scan.image.spacing == pytest.approx(get_profile("demo").spacing)
    body = _body(scan)
    assert body[:, :, 0].any(), "the neck continues below the field of view"
    assert body[:, :, -1].any(), "the top of the head is cut off"
    level_three = np.argwhere(np.isin(scan.labels.array, [5, 6]))[:, 2].min()
    mouth_slice = scan.image.world_to_voxel(scan.landmarks["mouth"])[0, 2]
    assert (mouth_slice - level_three) * scan.image.spacing[2] > 40


def test_phantom_adds_at_least_80_mm_of_neck():
    phantom = head_phantom("MR")
    spacing_k = float(np.linalg.norm(phantom.affine[:3, 2]))
    assert NECK_MM * spacing_k >= 80
    assert all(phantom.body[:, :, k].any() for k in range(NECK_MM))


def test_ct_subject_has_hounsfield_values():
    scan, _ = generate_subject("CT1", 0, seed=2, profile="ci", modality="CT")
    image = scan.image.array
    body = ndimage.binary_fill_holes(image > -300)
    assert np.median(image[~body]) < -900
    assert 0 <= np.median(image[body]) <= 80
    assert np.count_nonzero(image > 700) > 100
    assert np.count_nonzero((image > -150) & (image < -60)) > 100
    assert scan.modality == "CT"


def test_each_subject_has_its_own_face_recorded(ci_cohort):
    faces = [
        json.loads((ci_cohort / subject / "subject.json").read_text())["synthetic"]["parameters"][
            "face"
        ]
        for subject in ("SYN001", "SYN002")
    ]
    assert set(faces[0]) == {*FEATURES, "forehead_slope"}
    assert all(faces[0][name] != faces[1][name] for name in faces[0])


def test_face_shapes_move_the_face_and_leave_deep_anatomy_in_place():
    phantom = head_phantom("MR")
    extreme = {name: feature.amplitude[1] for name, feature in FEATURES.items()}
    extreme["forehead_slope"] = 0.12
    nose_tip = phantom.landmarks_index["nose_tip"][None]
    moved = face_displacement(nose_tip, extreme, phantom)[0]
    assert moved[1] > 0.8 * extreme["nose_length_mm"]
    oar_centres = np.array([spec.centre for spec in OAR_SPECS.values()], float) + [0, 0, NECK_MM]
    # The parotids lie just under the skin behind the jaw and follow a wider jaw by < 1 mm.
    assert np.abs(face_displacement(oar_centres, extreme, phantom)).max() < 1.0


def test_a_short_field_of_view_ends_at_the_mouth_or_nose_and_changes_nothing_else():
    short = [generate_subject("S", index, 9, "ci", short_fov_share=1.0) for index in range(2)]
    full = [generate_subject("S", index, 9, "ci") for index in range(2)]
    for (scan, params), (_, full_params) in zip(short, full, strict=True):
        assert params["fov_kind"] in ("mouth", "nose") and full_params["fov_kind"] == "neck"
        assert params["face"] == full_params["face"]
        assert params["rotation_deg"] == full_params["rotation_deg"]
        oars = set(np.unique(scan.labels.array)) - {0}
        assert not oars & {5, 6}, "no level III nodes in a field of view without neck"
        lowest = scan.image.voxel_to_world([[0, 0, 0]])[0, 2]
        assert lowest > scan.landmarks["mouth"][2] - 40


def test_head_pose_stays_within_15_degrees():
    for index in range(20):
        params = _draw_parameters(np.random.default_rng([1, index]), "MR", 0.0)
        assert np.abs(params["rotation_deg"]).max() <= 15.0
