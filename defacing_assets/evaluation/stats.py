"""The study's statistics: paired Wilcoxon tests, Benjamini-Hochberg FDR and plot symbols.

The study compares segmentation metrics (Dice, MSD, ...) of models trained or evaluated on
original and defaced scans with two-sided Wilcoxon signed-rank tests on paired values (the same
subject and OAR under two conditions), corrects the p-values with Benjamini-Hochberg over all
OARs and models compared, calls p <= 0.05 significant and marks plots with ns, *, **, ***,
****. This module is the domain core of that: pandas, numpy and scipy only, no Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Below six non-zero pairs the smallest two-sided exact p-value is 2 / 2**5 = 0.0625, so the
#: test could never reach the study's 0.05; such a p-value would read "ns" as if the data had
#: been tested. Reporting nan ("n/a") instead says "too few cases", as the study did for the
#: level III nodes (1 and 2 cases) it dropped.
DEFAULT_MIN_PAIRS = 6

#: (exclusive upper bound, symbol), strictest first; see `significance_symbol`.
_SYMBOL_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (1e-5, "****"),
    (1e-4, "***"),
    (0.01, "**"),
)
SIGNIFICANCE_LEVEL = 0.05

COMPARISON_COLUMNS = ["group_a", "group_b", "n", "mean_a", "mean_b", "p", "p_adjusted", "symbol"]


def paired_wilcoxon(
    a: pd.Series, b: pd.Series, *, min_pairs: int = DEFAULT_MIN_PAIRS
) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank test on the values of ``a`` and ``b`` paired by index.

    Pairing by index (e.g. a ``(subject, oar)`` MultiIndex) rather than by position makes the
    test independent of row order and drops cases present under only one condition, such as
    an OAR that defacing removed or an empty model output the study left out.

    Zero differences are discarded (scipy's ``zero_method="wilcox"``, Wilcoxon's original
    treatment); scipy picks the exact or the normal-approximation p-value (``method="auto"``).

    Args:
        a: values under the first condition; index labels must be unique.
        b: values under the second condition; index labels must be unique.
        min_pairs: fewest usable pairs to test (see ``DEFAULT_MIN_PAIRS`` for the default).

    Returns:
        ``(p, n)``: the two-sided p-value and the number of pairs where both values are
        finite (zero differences included in ``n``). ``p`` is nan, not an exception, when
        ``n < min_pairs`` or every difference is zero (no signed ranks to test), so a table
        of many comparisons can still be built and corrected.

    Raises:
        ValueError: an index has duplicate labels, so the pairing would be ambiguous.
    """
    paired = _finite_pairs(a, b)
    n = len(paired)
    differences = (paired["a"] - paired["b"]).to_numpy()
    if n < min_pairs or not np.any(differences != 0):
        return math.nan, n
    result = stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
    return float(result.pvalue), n


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, nan entries left as nan.

    The study controls the false discovery rate over all OARs and models compared. A
    comparison that could not be tested (nan) is no hypothesis, so it neither receives an
    adjusted value nor counts in the number of tests m, which would inflate the others.

    Args:
        p_values: raw p-values in [0, 1] or nan, any shape.

    Returns:
        Adjusted p-values as a float array of the input's shape, in the input's order.

    Raises:
        ValueError: a value that is not nan lies outside [0, 1] (from scipy).
    """
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    tested = ~np.isnan(values)
    if tested.any():
        adjusted[tested] = stats.false_discovery_control(values[tested], method="bh")
    return adjusted


def significance_symbol(p: float) -> str:
    """The study's plot symbol for a p-value.

    Thresholds: ``ns`` p > 0.05; ``*`` p <= 0.05; ``**`` p < 0.01; ``***`` p < 1e-4;
    ``****`` p < 1e-5; nan gives ``n/a`` (not tested). The study calls p <= 0.05 significant
    and ns "p > 0.05", so p == 0.05 exactly is ``*``; the stricter bounds are strict, so
    p == 0.01 is ``*``, p == 1e-4 is ``**`` and p == 1e-5 is ``***``.

    Args:
        p: a (preferably adjusted) p-value in [0, 1], or nan.

    Raises:
        ValueError: ``p`` lies outside [0, 1].
    """
    p = float(p)
    if math.isnan(p):
        return "n/a"
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p-value {p} is outside [0, 1]")
    if p > SIGNIFICANCE_LEVEL:
        return "ns"
    for bound, symbol in _SYMBOL_THRESHOLDS:
        if p < bound:
            return symbol
    return "*"


def compare_pairs(
    values: pd.DataFrame,
    group_column: str,
    value_column: str,
    pair_on: list[str],
    comparisons: list[tuple[str, str]],
    by: str | list[str] | None = None,
    *,
    min_pairs: int = DEFAULT_MIN_PAIRS,
) -> pd.DataFrame:
    """Paired Wilcoxon tests of group pairs with one Benjamini-Hochberg correction over all.

    For each comparison ``(A, B)`` the rows of group A and of group B are matched on the
    ``pair_on`` columns (e.g. ``["subject", "oar"]``); rows without a partner or with a
    non-finite value are dropped, as the study left out removed OARs and empty outputs.

    Args:
        values: long table, one row per case and group (e.g. a model's Dice per subject/OAR).
        group_column: column naming the condition compared (e.g. ``"trained_on"``).
        value_column: column with the metric.
        pair_on: columns identifying the same case in both groups; unique within each group
            (and ``by`` group).
        comparisons: ``(group_a, group_b)`` pairs to test.
        by: optional column(s), e.g. ``"oar"``, to test each comparison within every value of
            it. The correction still spans every row returned, as the study corrected over all
            OARs and models compared together.
        min_pairs: passed on to `paired_wilcoxon`.

    Returns:
        One row per (``by`` value,) comparison: the ``by`` column(s) if given, then
        ``group_a``, ``group_b``, ``n`` (matched pairs), ``mean_a`` and ``mean_b`` (over those
        pairs, the data tested), ``p``, ``p_adjusted`` (BH over all rows) and ``symbol`` (of
        ``p_adjusted``).

    Raises:
        KeyError: a named column is missing.
        ValueError: a case occurs twice within a group, so the pairing would be ambiguous.
    """
    by_columns = [] if by is None else [by] if isinstance(by, str) else list(by)
    missing = {group_column, value_column, *pair_on, *by_columns} - set(values.columns)
    if missing:
        raise KeyError(f"columns missing from values: {sorted(missing)}")
    key = [*by_columns, *[c for c in pair_on if c not in by_columns]]
    blocks = values.groupby(by_columns, sort=True) if by_columns else [((), values)]

    rows = []
    for by_value, block in blocks:
        by_value = by_value if isinstance(by_value, tuple) else (by_value,)
        indexed = block.set_index(key)
        for group_a, group_b in comparisons:
            a = _group_values(indexed, group_column, value_column, group_a)
            b = _group_values(indexed, group_column, value_column, group_b)
            matched = _finite_pairs(a, b)
            p, n = paired_wilcoxon(matched["a"], matched["b"], min_pairs=min_pairs)
            rows.append(
                {
                    **dict(zip(by_columns, by_value, strict=True)),
                    "group_a": group_a,
                    "group_b": group_b,
                    "n": n,
                    "mean_a": float(matched["a"].mean()) if n else math.nan,
                    "mean_b": float(matched["b"].mean()) if n else math.nan,
                    "p": p,
                }
            )
    table = pd.DataFrame(rows, columns=[*by_columns, *COMPARISON_COLUMNS[:6]])
    table["n"] = table["n"].astype(int)
    table["p_adjusted"] = benjamini_hochberg(table["p"].to_numpy(dtype=float))
    table["symbol"] = [significance_symbol(p) for p in table["p_adjusted"]]
    return table


def _finite_pairs(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """Columns ``a`` and ``b`` as floats, one row per index label where both are finite."""
    for name, series in (("a", a), ("b", b)):
        if not series.index.is_unique:
            duplicated = series.index[series.index.duplicated()].unique().tolist()
            raise ValueError(f"index of {name} has duplicate labels {duplicated[:5]}")
    paired = pd.concat(
        [pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")],
        axis=1,
        keys=["a", "b"],
        join="inner",
    ).astype(float)
    return paired[np.isfinite(paired.to_numpy()).all(axis=1)]


def _group_values(
    indexed: pd.DataFrame, group_column: str, value_column: str, group: str
) -> pd.Series:
    """The metric of one group indexed by case, refusing duplicate cases."""
    series = indexed.loc[indexed[group_column] == group, value_column]
    if not series.index.is_unique:
        duplicated = series.index[series.index.duplicated()].unique().tolist()
        raise ValueError(f"group {group!r} has duplicate cases {duplicated[:5]}")
    return series
