"""The facial-surface measure: all of it survives the identity, little survives refacing."""

import numpy as np
import pytest

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.hnc_safe import HncSafe
from defacing_assets.defacers.pydeface import Pydeface
from defacing_assets.qc.render import render_surface
from defacing_assets.qc.surface import facial_surface


@pytest.fixture(scope="module")
def subject():
    return generate_subject("F0", 3, seed=11, profile="demo")[0]


def _frontal(volume):
    return render_surface(volume, "MR", views=("frontal",))["frontal"]


def test_identity_keeps_the_whole_surface(subject):
    original = _frontal(subject.image)
    same = facial_surface(original, _frontal(subject.image), subject.landmarks)
    assert same.pixels > 1000
    assert same.kept_fraction == 1.0 and same.depth_correlation == pytest.approx(1.0)


def test_defacers_leave_less_of_the_surface(subject):
    original = _frontal(subject.image)
    kept = {}
    for method in (Pydeface(), HncSafe()):
        result = method.deface(subject.image, "MR", subject.labels)
        kept[method.name] = facial_surface(original, _frontal(result.image), subject.landmarks)
    assert kept["hnc_safe"].kept_fraction < 0.5
    assert kept["pydeface"].kept_fraction < 0.8
    assert np.isfinite(kept["hnc_safe"].depth_correlation)


def test_a_shifted_head_is_still_compared_point_for_point(subject):
    """Views of different extents (pydeface cuts the neck) are aligned in world space."""
    array = subject.image.array.copy()
    array[:, :, : array.shape[2] // 3] = 0
    cut = subject.image.with_array(array)
    result = facial_surface(_frontal(subject.image), _frontal(cut), subject.landmarks)
    assert result.kept_fraction > 0.95
