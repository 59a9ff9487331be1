"""``qc_overrides.csv``: a person's verdict wins over the automated one.

Columns: ``subject, defacer, passed, rater, note``. ``passed`` accepts
true/false, yes/no, 1/0, pass/fail (any case). Every bad row is reported with
the file and line number; an override for a subject or defacer the study does
not know is an error, not silently ignored, and so is a row with more or fewer
fields than the header (a note holding a comma must be quoted). The file is
read as UTF-8 (a byte-order mark, as spreadsheets write, is accepted).
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
    try:
        return _read(path, subjects, defacers)
    except UnicodeDecodeError as error:
        raise OverrideError(f"{path}: not UTF-8 text ({error})") from None
    except OSError as error:
        raise OverrideError(f"{path}: cannot be read ({error.strerror or error})") from None


def _read(path: Path, subjects: set[str] | None, defacers: set[str] | None) -> pd.DataFrame:
    problems, rows, seen = [], [], {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in ("subject", "defacer", "passed") if c not in header]
        unknown = [c for c in header if c not in COLUMNS]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if missing or unknown or repeated:
            raise OverrideError(
                f"{path}:1: header must be {', '.join(COLUMNS)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
                + (f"; repeated {repeated}" if repeated else "")
            )
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                problems.append(
                    f"{path}:{line}: {len(fields)} field(s), the header has {len(header)}"
                    " (quote a value that holds a comma)"
                )
                continue
            row = {name: value.strip() for name, value in zip(header, fields, strict=True)}
            verdict = row.get("passed", "").lower()
            if verdict not in _TRUE | _FALSE:
                problems.append(
                    f"{path}:{line}: passed must be true or false, got {row['passed']!r}"
                )
            for column, known in (("subject", subjects), ("defacer", defacers)):
                if not row[column]:
                    problems.append(f"{path}:{line}: {column} is empty")
                elif known is not None and row[column] not in known:
                    problems.append(f"{path}:{line}: unknown {column} {row[column]!r}")
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
