"""deepdefacer as its own tool runs it: it defaces the template's lower face, not HNC scans.

Measured with deepdefacer 2.1.2's model.hdf5, TensorFlow 2.21.0 and tf-keras
2.21.0 on CPU (2 cores, about 2.5 s a head; the first use adds about 3 s of
TensorFlow import):

* pydeface's template (whole head, 1 mm): 78.9 % of pydeface's face mask is
  removed and 2.1 % of the rest; of the face landmarks the mouth and the left
  eye go, the right eye (19 % of a 10 mm ball removed) and the nose tip (5 %)
  stay. What goes is the face below the orbits and the air in front of the
  neck, as reported for real heads.
* synthetic HNC subjects (profile demo, seed 21): 16 % and 25 % of the voxels
  removed, but none of the four face landmarks nor anything within 10 mm of
  them; what goes is air in front of and below the neck and the left
  submandibular gland and level III nodes (kept 35 % / 66 % and 18 % / 28 %),
  the right side untouched. The face survives, so DeepDefacer fails face QC
  on these scans as it did on all 55 HNC scans of the study.
"""

import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from defacing_assets.cohort.phantom import head_phantom, template_path  # noqa: E402
from defacing_assets.cohort.synthetic import generate_subject  # noqa: E402
from defacing_assets.defacers import deepdefacer as module  # noqa: E402
from defacing_assets.defacers.deepdefacer import DeepDefacer, voxel_space_resample  # noqa: E402
from defacing_assets.imaging import load_volume  # noqa: E402


@pytest.fixture(scope="module")
def defacer():
    method = DeepDefacer()
    ready, why = method.available()
    if not ready:
        pytest.skip(why)
    return method


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(f"S{i}", i, seed=21, profile="demo")[0] for i in range(2)]


@pytest.fixture(scope="module")
def results(defacer, subjects):
    return [defacer.deface(scan.image, scan.modality) for scan in subjects]


def _landmark_voxels(volume, points) -> dict[str, tuple[int, ...]]:
    voxels = np.round(volume.world_to_voxel(np.array(list(points.values())))).astype(int)
    return {name: tuple(v) for name, v in zip(points, voxels, strict=True)}


def test_defaced_is_input_times_kept_mask(subjects, results):
    for scan, result in zip(subjects, results, strict=True):
        assert result.status == "ok", result.reason
        assert "deepdefacer 2.1.2" in result.version and "TensorFlow" in result.version
        expected = scan.image.array * result.kept_mask.array
        np.testing.assert_array_equal(result.image.array, expected)


def test_face_survives_on_synthetic_hnc_scans_as_in_the_study(subjects, results):
    for scan, result in zip(subjects, results, strict=True):
        kept = result.kept_mask.array > 0
        landmarks = _landmark_voxels(scan.image, scan.landmarks)
        surviving = [name for name, voxel in landmarks.items() if kept[voxel]]
        assert len(surviving) >= 3, f"face removed: only {surviving} kept"  # measured: all 4
        assert result.changed_fraction > 0.05  # measured 0.16 and 0.25: it does remove voxels
        for label in (2, 6, 8):  # right submandibular, level III, parotid: kept whole
            assert np.mean(kept[scan.labels.array == label]) > 0.9


def test_template_loses_its_lower_face(defacer):
    template = load_volume(str(template_path()))
    result = defacer.deface(template)
    assert result.status == "ok", result.reason
    removed = result.kept_mask.array == 0
    face = load_volume(str(template_path("facemask.nii.gz"))).array < 0.5
    assert np.mean(removed[face]) > 0.7  # measured 0.789
    assert np.mean(removed[~face]) < 0.05  # measured 0.021
    phantom = head_phantom("MR")
    landmarks = {
        name: tuple(int(v) for v in np.round(index - [0, 0, phantom.k_offset]))
        for name, index in phantom.landmarks_index.items()
    }
    assert removed[landmarks["mouth"]]
    assert not removed[landmarks["nose_tip"]]  # measured: the nose tip survives


def test_resampling_is_deepdefacers_voxel_space_stretch():
    shape, target = (9, 13, 5), (16, 11, 12)
    for axis in range(3):
        ramp = np.broadcast_to(
            np.arange(shape[axis], dtype=np.float64).reshape(
                [-1 if a == axis else 1 for a in range(3)]
            ),
            shape,
        )
        out = voxel_space_resample(np.ascontiguousarray(ramp), target, nearest=False)
        n, m = shape[axis], np.arange(target[axis])
        expected = np.clip(n / 2 + (m - target[axis] / 2) * (n - 1) / (target[axis] - 1), 0, n - 1)
        line = np.moveaxis(out, axis, 0)[:, 0, 0]
        np.testing.assert_allclose(line, expected, atol=1e-6)


def test_nearest_round_trip_keeps_labels_but_a_short_axis_loses_its_first_slice():
    # deepdefacer samples index n/2 + (m - 80)(n - 1)/159, not (n - 1)/2 + ...: going
    # back, voxel 0 of an axis of n <= 80 voxels falls outside the 160^3 grid and gets 0
    # (so the tool zeroes the first slice of such scans; the demo subjects' k has 71-77).
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(1, 3, (6, 6, 6)), np.ones((10, 10, 5))).astype(np.uint8)
    there = voxel_space_resample(labels, (160, 160, 160), nearest=True)
    back = voxel_space_resample(there, labels.shape, nearest=True)
    np.testing.assert_array_equal(back[1:, 1:, 1:], labels[1:, 1:, 1:])
    assert back[0].max() == back[:, 0].max() == back[:, :, 0].max() == 0
    ones = np.ones((200, 90, 81), dtype=np.uint8)
    there = voxel_space_resample(ones, (160, 160, 160), nearest=True)
    assert voxel_space_resample(there, ones.shape, nearest=True).all()


def test_missing_model_is_unavailable_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setenv(module.MODEL_ENV, str(tmp_path / "absent.hdf5"))
    method = DeepDefacer()
    ready, why = method.available()
    assert not ready
    assert why == f"DeepDefacer model not found: {module.MODEL_ENV}={tmp_path / 'absent.hdf5'}"
    result = method.deface(load_volume(str(template_path())))
    assert (result.status, result.reason, result.image) == ("unavailable", why, None)
    assert "model missing" in result.version


def test_missing_tf_keras_is_unavailable_with_its_reason(monkeypatch, tmp_path):
    model = tmp_path / "model.hdf5"
    model.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    ready, why = DeepDefacer(model_path=model).available()
    assert not ready
    assert why.startswith("TensorFlow with tf-keras is needed to run DeepDefacer: ")
    assert "tf_keras" in why


def test_unreadable_model_is_unavailable_with_its_reason(tmp_path):
    model = tmp_path / "model.hdf5"
    model.write_bytes(b"not an HDF5 file")
    ready, why = DeepDefacer(model_path=model).available()
    assert not ready
    assert why.startswith(f"cannot load the DeepDefacer model {model}: ")
