import math

import numpy as np
import pandas as pd
import pytest

from defacing_assets.evaluation.stats import (
    benjamini_hochberg,
    compare_pairs,
    paired_wilcoxon,
    significance_symbol,
)

# Darwin's Zea mays heights (inches) of cross- and self-fertilised plants in 15 pairs, from
# Fisher, The Design of Experiments (1935), the worked example of Wilcoxon, "Individual
# Comparisons by Ranking Methods", Biometrics Bulletin 1 (1945) 80-83. Their differences in
# eighths of an inch are scipy.stats.wilcoxon's docs example, d = [6, 8, 14, 16, 23, 24, 28,
# 29, 41, -48, 49, 56, 60, -67, 75], documented there as two-sided p = 0.041259765625.
# By hand: the negative differences have ranks 10 and 14, T = 24; 676 of the 2**15 sign
# patterns have a rank sum <= 24, so exact two-sided p = 2 * 676 / 32768 = 0.041259765625.
CROSS = [23.5, 12, 21, 22, 19.125, 21.5, 22.125, 20.375, 18.25, 21.625, 23.25, 21, 22.125, 23, 12]
SELF = [17.375, 20.375, 20, 20, 18.375, 18.625, 18.625, 15.25, 16.5, 18, 16.25, 18, 12.75, 15.5, 18]
CORN_P = 0.041259765625

# Hollander & Wolfe, Nonparametric Statistical Methods (1973), p. 29 (also R's ?wilcox.test):
# depression scale at first (x) and second (y) visit of 9 patients. Differences x - y rank
# (by |d|): 0.010 (1), -0.080 (2), -0.147 (3), 0.430 (4), 0.490 (5), 0.590 (6), 0.620 (7),
# 0.952 (8), 1.022 (9); negative ranks 2 + 3, T = 5. Subsets of {1..9} summing to <= 5: {},
# {1}..{5}, {1,2}, {1,3}, {1,4}, {2,3} = 10 of 2**9, so two-sided p = 2 * 10 / 512 = 0.0390625
# (R reports the one-sided V = 40, p = 0.01953).
FIRST = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
SECOND = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
DEPRESSION_P = 20 / 512


def _corn():
    index = pd.MultiIndex.from_tuples(
        [(f"pot{i // 4}", f"pair{i}") for i in range(15)], names=["pot", "pair"]
    )
    return pd.Series(CROSS, index=index), pd.Series(SELF, index=index)


def test_paired_wilcoxon_reproduces_the_published_corn_example_with_shuffled_pairs():
    cross, self_fertilised = _corn()
    shuffled = self_fertilised.sample(frac=1, random_state=0)
    p, n = paired_wilcoxon(cross, shuffled)
    assert n == 15
    assert p == pytest.approx(CORN_P, abs=1e-12)


def test_paired_wilcoxon_uses_only_pairs_where_both_values_are_finite():
    cross, self_fertilised = _corn()
    extra = pd.MultiIndex.from_tuples([("pot9", "a"), ("pot9", "b"), ("pot9", "c")])
    cross = pd.concat([cross, pd.Series([np.nan, 1.0, 5.0], index=extra)])  # a: nan, c: unpaired
    self_fertilised = pd.concat([self_fertilised, pd.Series([2.0, np.inf], index=extra[:2])])
    p, n = paired_wilcoxon(cross, self_fertilised)
    assert n == 15
    assert p == pytest.approx(CORN_P, abs=1e-12)


def test_paired_wilcoxon_with_too_few_pairs_is_nan_not_an_error():
    cross, self_fertilised = _corn()
    p, n = paired_wilcoxon(cross.iloc[:5], self_fertilised.iloc[:5])
    assert math.isnan(p) and n == 5
    p, n = paired_wilcoxon(cross.iloc[:5], self_fertilised.iloc[:5], min_pairs=5)
    assert not math.isnan(p) and n == 5


def test_paired_wilcoxon_with_all_differences_zero_is_nan():
    values = pd.Series([0.7, 0.8, 0.6, 0.9, 0.75, 0.85, 0.65])
    p, n = paired_wilcoxon(values, values.copy())
    assert math.isnan(p) and n == 7


def test_paired_wilcoxon_refuses_ambiguous_duplicate_labels():
    a = pd.Series([1.0, 2.0, 3.0], index=["s1", "s1", "s2"])
    with pytest.raises(ValueError, match="duplicate"):
        paired_wilcoxon(a, pd.Series([1.0, 2.0], index=["s1", "s2"]))


def test_benjamini_hochberg_matches_the_hand_computation():
    # m = 4; sorted p with rank k: 0.01 (1), 0.03 (2), 0.04 (3), 0.20 (4).
    # p * m / k: 0.01*4/1 = 0.04, 0.03*4/2 = 0.06, 0.04*4/3 = 0.05333, 0.20*4/4 = 0.20.
    # Running minimum from the largest rank down: 0.20; min(0.05333, 0.20) = 0.05333;
    # min(0.06, 0.05333) = 0.05333; min(0.04, 0.05333) = 0.04.
    # Back in input order [0.01, 0.04, 0.03, 0.20]: [0.04, 0.05333, 0.05333, 0.20].
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    np.testing.assert_allclose(adjusted, [0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_benjamini_hochberg_keeps_nan_and_leaves_it_out_of_the_count():
    adjusted = benjamini_hochberg([0.01, np.nan, 0.04, 0.03, np.nan, 0.20])
    assert np.isnan(adjusted[[1, 4]]).all()
    np.testing.assert_allclose(adjusted[[0, 2, 3, 5]], [0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_benjamini_hochberg_with_nothing_tested_is_all_nan():
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()
    assert benjamini_hochberg([]).shape == (0,)


@pytest.mark.parametrize(
    ("p", "symbol"),
    [
        (1.0, "ns"),
        (0.0501, "ns"),
        (0.05, "*"),  # significant at p <= 0.05, and ns is p > 0.05
        (0.0100001, "*"),
        (0.01, "*"),  # ** is strictly below 0.01
        (0.00999, "**"),
        (1e-4, "**"),  # *** is strictly below 1e-4
        (0.99e-4, "***"),
        (1e-5, "***"),  # **** is strictly below 1e-5
        (0.99e-5, "****"),
        (0.0, "****"),
        (float("nan"), "n/a"),
    ],
)
def test_significance_symbol_at_each_threshold_and_boundary(p, symbol):
    assert significance_symbol(p) == symbol


def test_significance_symbol_refuses_a_value_that_is_no_p_value():
    with pytest.raises(ValueError, match="outside"):
        significance_symbol(1.5)


def test_compare_pairs_matches_subject_and_oar_in_shuffled_rows_and_drops_unmatched_ones():
    cases = [(f"s{i // 2}", ["Parotid_L", "Parotid_R"][i % 2]) for i in range(9)]
    first = pd.DataFrame(cases, columns=["subject", "oar"]).assign(visit="first", score=FIRST)
    second = pd.DataFrame(cases, columns=["subject", "oar"]).assign(visit="second", score=SECOND)
    unmatched = pd.DataFrame(
        {
            "subject": ["s4", "s5", "s6"],
            "oar": ["Parotid_R", "Parotid_L", "Parotid_L"],
            "visit": ["first", "second", "first"],
            "score": [9.0, -9.0, 5.0],
        }
    )
    partner_is_nan = pd.DataFrame(
        {"subject": ["s6"], "oar": ["Parotid_L"], "visit": ["second"], "score": [np.nan]}
    )
    values = pd.concat([first, second, unmatched, partner_is_nan]).sample(frac=1, random_state=1)

    table = compare_pairs(values, "visit", "score", ["subject", "oar"], [("first", "second")])

    assert len(table) == 1
    row = table.iloc[0]
    assert (row["group_a"], row["group_b"], row["n"]) == ("first", "second", 9)
    assert row["mean_a"] == pytest.approx(np.mean(FIRST))
    assert row["mean_b"] == pytest.approx(np.mean(SECOND))
    assert row["p"] == pytest.approx(DEPRESSION_P, abs=1e-12)
    assert row["p_adjusted"] == pytest.approx(DEPRESSION_P, abs=1e-12)  # one test: unchanged
    assert row["symbol"] == "*"


def test_compare_pairs_by_oar_corrects_over_all_oars_and_comparisons_together():
    # All differences positive and distinct, so exact two-sided p = 2 / 2**n, except where
    # the smallest difference is negative: 2 * 2 / 2**n ({} and {1} have rank sum <= 1).
    # Parotid_L: original-mask_face n=8 -> 0.0078125; original-pydeface n=6 -> 0.03125.
    # Parotid_R: original-mask_face n=7 -> 0.015625; original-pydeface n=6, rank 1 negative
    # -> 0.0625. BH with m = 4: sorted 0.0078125*4/1 = 0.03125, 0.015625*4/2 = 0.03125,
    # 0.03125*4/3 = 0.041667, 0.0625*4/4 = 0.0625; running minima leave them as they are.
    # Correcting per OAR (m = 2) would instead give 0.015625 for Parotid_L, original-mask_face.
    rows = []
    for oar, n_mask, n_pydeface, flip in [("Parotid_L", 8, 6, False), ("Parotid_R", 7, 6, True)]:
        for i in range(8):
            rows.append((f"s{i}", oar, "original", 10.0))
            if i < n_mask:
                rows.append((f"s{i}", oar, "mask_face", 10.0 - (i + 1) / 10))
            if i < n_pydeface:
                sign = -1 if flip and i == 0 else 1
                rows.append((f"s{i}", oar, "pydeface", 10.0 - sign * (i + 1) / 10))
    values = pd.DataFrame(rows, columns=["subject", "oar", "trained_on", "dsc"])

    table = compare_pairs(
        values,
        "trained_on",
        "dsc",
        ["subject", "oar"],
        [("original", "mask_face"), ("original", "pydeface")],
        by="oar",
    )

    assert list(table.columns) == [
        "oar",
        "group_a",
        "group_b",
        "n",
        "mean_a",
        "mean_b",
        "p",
        "p_adjusted",
        "symbol",
    ]
    assert table["n"].tolist() == [8, 6, 7, 6]
    np.testing.assert_allclose(table["p"], [0.0078125, 0.03125, 0.015625, 0.0625])
    np.testing.assert_allclose(table["p_adjusted"], [0.03125, 0.125 / 3, 0.03125, 0.0625])
    assert table["symbol"].tolist() == ["*", "*", "*", "ns"]
