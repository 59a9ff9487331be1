import numpy as np

from defacing_assets.imaging import Volume, resample_like, resample_to_spacing
from defacing_assets.imaging.resample import from_sitk, to_sitk


def _ball(shape=(40, 40, 20), spacing=(1.0, 1.0, 2.0), flip=False):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-20, -20, -20]
    if flip:
        affine[0, 0] = -spacing[0]
        affine[0, 3] = 20
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = grid.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - [3.0, -2.0, 0.0], axis=1) < 10
    return Volume(inside.reshape(shape).astype(np.float32), affine)


def test_sitk_round_trip_preserves_world_geometry():
    volume = _ball(flip=True)
    back = from_sitk(to_sitk(volume))
    assert back.same_grid(volume)
    np.testing.assert_array_equal(back.array, volume.array)


def test_resample_to_spacing_keeps_the_object_in_place():
    volume = _ball()
    coarse = resample_to_spacing(volume, (2.0, 2.0, 2.0), "nearest")
    assert coarse.spacing == (2.0, 2.0, 2.0)
    assert coarse.shape == (20, 20, 20)

    def centroid(v):
        return v.voxel_to_world(np.argwhere(v.array > 0.5)).mean(axis=0)

    np.testing.assert_allclose(centroid(coarse), centroid(volume), atol=1.0)


def test_resample_like_matches_between_orientations():
    ras, las = _ball(), _ball(flip=True)
    moved = resample_like(ras, las, "nearest")
    assert moved.same_grid(las)
    assert np.mean(moved.array == las.array) > 0.99
