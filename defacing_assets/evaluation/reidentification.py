"""Re-identification: could a defaced scan be matched back to its person?

The measure of Schwarz et al. and of defaceRT: each defaced frontal render
(described at its original's face, :meth:`FaceDetector.identity`) is a probe,
the gallery is every subject's original frontal render, and a probe is
re-identified when its nearest gallery descriptor is its own subject's
(rank 1). The undefaced method's rate is the sanity line: it must be high, or
the cohort's faces are too alike for any rate to mean something. Chance is one
over the gallery's size.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

REFERENCE_METHOD = "original"
REIDENTIFICATION_COLUMNS = ["defacer", "probes", "reidentified", "rate", "chance"]


def descriptors(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Subject -> face descriptor, for the QC rows that have one."""
    usable = rows[rows["face_descriptor"].notna()]
    return {
        str(subject): np.asarray(json.loads(text), dtype=float)
        for subject, text in zip(usable["subject"], usable["face_descriptor"], strict=True)
    }


def rank1_reidentification(qc: pd.DataFrame) -> pd.DataFrame:
    """Per defacer: probes (subjects with a described face), how many were re-identified at
    rank 1 against the gallery of all originals, the rate and the chance rate. Empty when
    the QC table has no descriptors or no original to build the gallery from."""
    if qc.empty or "face_descriptor" not in qc:
        return pd.DataFrame(columns=REIDENTIFICATION_COLUMNS)
    ok = qc[qc["status"] == "ok"]
    gallery = descriptors(ok[ok["defacer"] == REFERENCE_METHOD])
    if not gallery:
        return pd.DataFrame(columns=REIDENTIFICATION_COLUMNS)
    names = sorted(gallery)
    matrix = np.stack([gallery[name] for name in names])
    rows = []
    for method, group in ok.groupby("defacer"):
        probes = {s: d for s, d in descriptors(group).items() if s in gallery}
        hits = sum(
            names[int(np.argmin(np.linalg.norm(matrix - probe, axis=1)))] == subject
            for subject, probe in probes.items()
        )
        rows.append(
            {
                "defacer": method,
                "probes": len(probes),
                "reidentified": int(hits),
                "rate": hits / len(probes) if probes else np.nan,
                "chance": 1.0 / len(names),
            }
        )
    return pd.DataFrame(rows, columns=REIDENTIFICATION_COLUMNS)


def rate_text(table: pd.DataFrame, method: str) -> str:
    """One method's row of :func:`rank1_reidentification` (indexed by defacer) as
    "hits/probes = rate (chance c)"; "-" when it has no probes."""
    if method not in table.index or not table.loc[method, "probes"]:
        return "-"
    row = table.loc[method]
    hits, probes = int(row["reidentified"]), int(row["probes"])
    return f"{hits}/{probes} = {row['rate']:.0%} (chance {row['chance']:.0%})"
