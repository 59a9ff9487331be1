import numpy as np
import pandas as pd
import pytest

from defacing_assets.evaluation.cohort import assign_folds, fold_roles, select_cohort
from defacing_assets.evaluation.voxel_loss import figure2, table1
from defacing_assets.evaluation.voxels import voxel_ratios
from defacing_assets.imaging import Volume


def _blobs():
    labels = np.zeros((20, 20, 10), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 1  # 64 voxels
    labels[10:14, 2:6, 2:6] = 5  # 64 voxels
    labels[2:7, 12:16, 2:4] = 7  # 40 voxels
    return Volume(labels, np.eye(4))


def test_voxel_ratios_exact_on_known_blobs_and_masks():
    labels = _blobs()
    kept = np.ones(labels.shape, dtype=np.uint8)
    kept[2:4, 2:6, 2:6] = 0  # half of label 1
    kept[10:14, 2:6, 2:6] = 0  # all of label 5
    table = voxel_ratios(labels, labels.with_array(kept)).set_index("oar")
    assert table.loc["Glnd_Submand_L", "voxels_before"] == 64
    assert table.loc["Glnd_Submand_L", "voxels_kept"] == 32
    assert table.loc["Glnd_Submand_L", "ratio"] == 0.5
    assert table.loc["LN_Neck_III_L", "completely_removed"]
    assert table.loc["Parotid_L", "ratio"] == 1.0
    assert np.isnan(table.loc["Parotid_R", "ratio"])
    assert not table.loc["Parotid_R", "completely_removed"], "absent is not removed"


def test_voxel_ratios_refuse_a_different_grid():
    labels = _blobs()
    with pytest.raises(ValueError, match="differs from the label grid"):
        voxel_ratios(labels, Volume(np.ones((20, 20, 9), np.uint8), np.eye(4)))


def _constructed_cohort():
    """Three subjects, two methods; s3 fails pydeface QC; pydeface removes level III twice."""
    ratios, qc = [], []
    for subject in ("s1", "s2", "s3"):
        for method, passed in (("pydeface", subject != "s3"), ("mask_face", True)):
            qc.append({"subject": subject, "defacer": method, "passed": passed})
            labels = _blobs()
            kept = np.ones(labels.shape, np.uint8)
            if method == "pydeface":
                kept[10:14] = 0
            table = voxel_ratios(labels, labels.with_array(kept))
            table["subject"], table["defacer"] = subject, method
            ratios.append(table)
    return pd.concat(ratios, ignore_index=True), pd.DataFrame(qc)


def test_table1_counts_on_a_constructed_cohort():
    ratios, qc = _constructed_cohort()
    table = table1(ratios, qc, ["mask_face", "pydeface"])
    assert table.loc["LN_Neck_III_L", "pydeface"] == 2, "s3 failed QC: not counted as removed"
    assert table.loc["LN_Neck_III_L", "mask_face"] == 0
    assert table.loc["Total", "pydeface"] == "2 (22%)"  # 2 of 3 subjects x 3 OARs present
    assert table.loc["Unavailable incl. QC failures", "pydeface"] == "5 (56%)"
    assert figure2(ratios, qc, ["mask_face", "pydeface"])[:4] == b"\x89PNG"


def test_cohort_requires_every_compared_method_and_folds_are_balanced():
    qc = pd.DataFrame(
        [
            {"subject": f"s{i:02d}", "defacer": m, "passed": not (m == "fsl" and i < 3)}
            for i in range(13)
            for m in ("original", "fsl", "pydeface", "never")
        ]
    )
    qc.loc[qc["defacer"] == "original", "passed"] = False
    qc.loc[qc["defacer"] == "never", "passed"] = False
    cohort, excluded, compared = select_cohort(qc, [f"s{i:02d}" for i in range(12)], seed=3)
    assert compared == ["fsl", "original", "pydeface"], "never-passing methods are dropped"
    assert sorted(excluded["subject"]) == ["s00", "s01", "s02", "s12"]
    assert "fsl: QC failed" in excluded.set_index("subject").loc["s00", "reason"]
    assert excluded.set_index("subject").loc["s12", "reason"] == "no OAR labels"
    sizes = cohort["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1 and len(cohort) == 9
    again, _, _ = select_cohort(qc, [f"s{i:02d}" for i in range(12)], seed=3)
    assert again.equals(cohort)


def test_folds_are_seeded_and_roles_rotate():
    subjects = [f"s{i}" for i in range(29)]
    assert assign_folds(subjects, 5, 1) == assign_folds(list(reversed(subjects)), 5, 1)
    assert assign_folds(subjects, 5, 1) != assign_folds(subjects, 5, 2)
    assert fold_roles(4, 5) == {"test": [4], "validation": [0], "train": [1, 2, 3]}
