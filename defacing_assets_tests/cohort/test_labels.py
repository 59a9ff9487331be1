import pytest

from defacing_assets.cohort.labels import LABEL_NAMES, OAR_LABELS, label_for_roi


def test_label_order_is_the_studys():
    assert list(OAR_LABELS.values()) == list(range(1, 9))
    assert [LABEL_NAMES[v] for v in (1, 3, 5, 7)] == [
        "Glnd_Submand_L",
        "LN_Neck_II_L",
        "LN_Neck_III_L",
        "Parotid_L",
    ]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Glnd_Submand_L", 1),
        ("Glnd_Submand_R", 2),
        ("LN_Neck_II_L", 3),
        ("LN_Neck_II_R", 4),
        ("LN_Neck_III_L", 5),
        ("LN_Neck_III_R", 6),
        ("Parotid_L", 7),
        ("Parotid_R", 8),
        ("parotid left", 7),
        ("Lt Parotid", 7),
        ("PAROTID_RT", 8),
        ("Submandibular Gland R", 2),
        ("Level II Left", 3),
        ("level_2_r", 4),
        ("LN Neck III Lt", 5),
        ("ParotidR", 8),
    ],
)
def test_tg263_names_and_common_variants(name, label):
    assert label_for_roi(name) == label


@pytest.mark.parametrize(
    "name", ["Brainstem", "Parotid", "LN_Neck_IB_L", "LN_Neck_II-III_L", "GTV"]
)
def test_other_or_ambiguous_structures_are_not_oars(name):
    assert label_for_roi(name) is None


def test_site_table_wins():
    assert label_for_roi("PG_left_contour", {"pg_left_contour": 7}) == 7
