"""``qc_overrides.csv``: a person's verdict wins over the automated one.

Columns: ``subject, defacer, passed, rater, note``. ``passed`` accepts
true/false, yes/no, 1/0, pass/fail (any case). Every bad row is reported with
the file and line number; an override for a subject or defacer the study does
not know is an error, not silently ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

OVERRIDES_FILE = "qc_overrides.csv"
COLUMNS = ("subject", "defacer", "passed", "rater", "note")
_TRUE = {"true", "yes", "1", "pass", "passed"}
_FALSE = {"false", "no", "0", "fail", "failed"}


class OverrideError(ValueError):
    """A problem in qc_overrides.csv, naming the file and line(s)."""


def load_overrides(
    path: str | Path, subjects: set[str] | None = None, defacers: set[str] | None = None
) -> pd.DataFrame:
    """Validated overrides (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    problems, rows, seen = [], [], {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in ("subject", "defacer", "passed") if c not in header]
        unknown = [c for c in header if c not in COLUMNS]
        if missing or unknown:
            raise OverrideError(
                f"{path}:1: header must be {', '.join(COLUMNS)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            verdict = row.get("passed", "").lower()
            if verdict not in _TRUE | _FALSE:
                problems.append(
                    f"{path}:{line}: passed must be true or false, got {row['passed']!r}"
                )
            if subjects is not None and row["subject"] not in subjects:
                problems.append(f"{path}:{line}: unknown subject {row['subject']!r}")
            if defacers is not None and row["defacer"] not in defacers:
                problems.append(f"{path}:{line}: unknown defacer {row['defacer']!r}")
            key = (row["subject"], row["defacer"])
            if key in seen:
                problems.append(f"{path}:{line}: duplicate of line {seen[key]} for {key}")
            seen[key] = line
            rows.append(
                {
                    "subject": row["subject"],
                    "defacer": row["defacer"],
                    "passed": verdict in _TRUE,
                    "rater": row.get("rater", ""),
                    "note": row.get("note", ""),
                }
            )
    if problems:
        raise OverrideError("\n".join(problems))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def apply_overrides(qc: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """QC table with overridden verdicts; ``manual`` marks the rows a person decided."""
    result = qc.copy()
    result["manual"] = False
    result["rater"] = ""
    result["note"] = ""
    for override in overrides.itertuples(index=False):
        match = (result["subject"] == override.subject) & (result["defacer"] == override.defacer)
        result.loc[match, ["passed", "manual", "rater", "note"]] = [
            bool(override.passed),
            True,
            override.rater,
            override.note,
        ]
    result["passed"] = result["passed"].astype(bool)
    result["manual"] = result["manual"].astype(bool)
    return result
