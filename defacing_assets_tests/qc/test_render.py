"""Surface renders: right size, upright, facing the viewer, skin where the landmarks are."""

import io

import numpy as np
import pytest
from PIL import Image

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.imaging.volume import Volume
from defacing_assets.qc import render

SURFACE_TOLERANCE_MM = 3.0
"""Landmarks sit on the phantom's skin; CT at -300 HU finds it within 2 mm (measured)."""
MR_SURFACE_TOLERANCE_MM = 8.0
"""The phantom's face is pydeface's *average* head: its skin fades over about 10 mm into
dim tissue, so Otsu's MR threshold (about half the brain's brightness) lies 1-7.5 mm inside
the landmarks (measured), deepest where the bias field darkens the face."""


@pytest.fixture(scope="module")
def mr_scan():
    return generate_subject("R0", 0, seed=5, profile="demo", modality="MR")[0]


@pytest.fixture(scope="module")
def ct_scan():
    return generate_subject("R1", 1, seed=5, profile="demo", modality="CT")[0]


@pytest.fixture(scope="module")
def mr_views(mr_scan):
    return render.render_surface(mr_scan.image, "MR")


@pytest.fixture(scope="module")
def ct_views(ct_scan):
    """Geometry is checked on CT, whose -300 HU surface is the landmarks' skin."""
    return render.render_surface(ct_scan.image, "CT")


def _landmark_pixels(view, landmarks):
    projected = view.project(np.array(list(landmarks.values())))
    return {name: tuple(point) for name, point in zip(landmarks, projected, strict=True)}


def test_views_are_grayscale_images_of_the_expected_size(mr_scan, mr_views):
    assert tuple(mr_views) == render.VIEWS
    grid = render.isotropic_grid(mr_scan.image, 1.0)
    for view in mr_views.values():
        assert view.image.dtype == np.uint8 and view.image.ndim == 2
        assert view.image.shape == view.height_mm.shape
        assert view.image[0, 0] == 0 and view.image[0, -1] == 0, "background in the corners"
        assert view.image.max() > 150, "lit skin"
    rows = {view.image.shape[0] for view in mr_views.values()}
    assert len(rows) == 1, "all views share the superior-inferior extent"
    frontal, profile = mr_views["frontal"].image, mr_views["profile_left"].image
    # Images cover the head's bounding box: left-right across the frontal, front-back in profile.
    assert frontal.shape[1] <= grid.shape[0] and profile.shape[1] <= grid.shape[1]
    assert frontal.shape[1] > 0.5 * grid.shape[0] and profile.shape[1] > 0.5 * grid.shape[1]


def test_frontal_is_upright_and_the_nose_is_nearest_the_viewer(ct_scan, ct_views):
    view = ct_views["frontal"]
    pixels = _landmark_pixels(view, ct_scan.landmarks)
    # Upright: eyes above the nose above the mouth (row 0 is superior).
    assert pixels["eye_left"][0] < pixels["nose_tip"][0] < pixels["mouth"][0]
    assert pixels["eye_right"][0] < pixels["nose_tip"][0]
    # Facing the patient: the patient's right is on the image's left.
    assert pixels["eye_right"][1] < pixels["nose_tip"][1] < pixels["eye_left"][1]
    # The nose tip is on the rendered skin and is the nearest point of the face around it.
    row, col, height = pixels["nose_tip"]
    row, col = int(round(row)), int(round(col))
    assert abs(view.height_mm[row, col] - height) < SURFACE_TOLERANCE_MM
    face = view.height_mm[row - 30 : row + 30, col - 30 : col + 30]
    assert np.nanmax(face) - height < SURFACE_TOLERANCE_MM
    nearest = np.unravel_index(np.nanargmax(face), face.shape)
    assert np.hypot(nearest[0] - 30, nearest[1] - 30) < 8, "nearest point is the nose tip"


@pytest.mark.parametrize("side", ["left", "right"])
def test_side_views_show_the_named_side_of_the_face(ct_scan, ct_views, side):
    other = "right" if side == "left" else "left"
    oblique = ct_views[f"oblique_{side}"]
    row, col, height = _landmark_pixels(oblique, ct_scan.landmarks)[f"eye_{side}"]
    visible = oblique.height_mm[int(round(row)), int(round(col))]
    # The landmark closes the eye opening; a subject's deeper socket (face_shape) lets the
    # view see a few mm into it, while an eye hidden behind the nose is 20 mm off.
    assert abs(visible - height) < 2 * SURFACE_TOLERANCE_MM, f"oblique_{side} shows eye_{side}"
    # In profile the far eye is hidden behind the head, and the nose points to the image's
    # left for the patient's left side (camera on that side, head up), to the right otherwise.
    profile = ct_views[f"profile_{side}"]
    pixels = _landmark_pixels(profile, ct_scan.landmarks)
    row, col, height = pixels[f"eye_{other}"]
    assert profile.height_mm[int(round(row)), int(round(col))] - height > 20
    nose_col = pixels["nose_tip"][1]
    centre = profile.image.shape[1] / 2
    assert nose_col < centre if side == "left" else nose_col > centre


def _surface_within(mask: Volume, point: np.ndarray, radius_mm: float) -> bool:
    """Whether both skin and air lie within ``radius_mm`` of the point (the skin passes by)."""
    centre = np.round(mask.world_to_voxel(point)[0]).astype(int)
    r = int(np.ceil(radius_mm / mask.spacing[0]))
    box = mask.array[tuple(slice(c - r, c + r + 1) for c in centre)]
    grid = np.indices(box.shape) - r
    ball = np.sum(grid**2, axis=0) * mask.spacing[0] ** 2 <= radius_mm**2
    return bool(box[ball].any() and not box[ball].all())


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_skin_masks_pass_through_the_landmarks(mr_scan, ct_scan, modality):
    scan, tolerance = (
        (mr_scan, MR_SURFACE_TOLERANCE_MM) if modality == "MR" else (ct_scan, SURFACE_TOLERANCE_MM)
    )
    mask = render.skin_volume(scan.image, modality)
    assert mask.array.dtype == bool
    assert np.allclose(mask.spacing, 1.0) and mask.orientation == "RAS"
    np.testing.assert_array_equal(render.skin_mask(scan.image, modality), mask.array)
    for name, point in scan.landmarks.items():
        assert _surface_within(mask, np.array(point), tolerance), name
    # The head is one solid piece: its centre is inside.
    centre = np.mean(list(scan.landmarks.values()), axis=0) + [0, -60, 0]
    index = np.round(mask.world_to_voxel(centre)[0]).astype(int)
    assert mask.array[tuple(index)]


def test_thresholds_per_modality(mr_scan):
    field = render.skin_field(mr_scan.image, "MR")
    # Otsu splits air (about 0) from soft tissue (about 400 in the synthetic MR).
    assert 80 < field.threshold < 350
    assert render.skin_threshold(np.zeros(3), "CT") == render.CT_SKIN_HU == -300.0
    with pytest.raises(ValueError, match="modality"):
        render.skin_threshold(np.zeros(3), "PET")


def test_otsu_splits_two_populations_in_the_middle_of_the_gap():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 3, 50_000), rng.normal(200, 20, 20_000)])
    assert 50 < render.otsu_threshold(values) < 120


def test_specks_outside_the_head_do_not_stop_rays():
    array = np.zeros((60, 60, 60), dtype=np.float32)
    ii, jj, kk = np.indices(array.shape)
    array[(ii - 30) ** 2 + (jj - 30) ** 2 + (kk - 30) ** 2 <= 15**2] = 100.0
    array[28:32, 55:58, 28:32] = 100.0  # a marker in front of the "face"
    volume = Volume(array, np.eye(4))
    view = render.render_surface(volume, "MR", views=("frontal",))["frontal"]
    row, col, height = view.project(np.array([[30.0, 45.0, 30.0]]))[0]
    assert abs(view.height_mm[int(round(row)), int(round(col))] - height) < 1.5


def test_png_outputs(tmp_path, mr_scan, mr_views):
    image = mr_views["frontal"].image
    path = tmp_path / "frontal.png"
    render.save_png(image, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    data = render.render_png(mr_scan.image, "MR", "profile_right")
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size[::-1] == mr_views["profile_right"].image.shape
    images = {name: view.image for name, view in mr_views.items()}
    sheet = render.montage(images)
    widths = sum(im.shape[1] for im in images.values()) + 4 * (len(images) - 1)
    assert sheet.shape == (max(im.shape[0] for im in images.values()), widths)


def test_unknown_view_is_refused(mr_scan):
    with pytest.raises(ValueError, match="unknown views"):
        render.render_views(mr_scan.image, "MR", views=("top",))


def test_storage_orientation_does_not_change_the_render():
    scan = generate_subject("R2", 2, seed=5, profile="ci")[0]
    image = scan.image
    # The same voxels stored LPS (first two axes reversed): the world is unchanged.
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = image.affine @ flipped
    affine[:3, 3] = image.voxel_to_world([[image.shape[0] - 1, image.shape[1] - 1, 0]])[0]
    lps = Volume(np.ascontiguousarray(image.array[::-1, ::-1, :]), affine)
    assert lps.orientation == "LPS"
    views = ("frontal", "oblique_left")
    ras, other = (
        render.render_views(image, "MR", views=views),
        render.render_views(lps, "MR", views=views),
    )
    for name in views:
        np.testing.assert_array_equal(ras[name], other[name])
