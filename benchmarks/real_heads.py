"""Defacers on the real heads that ship inside public packages (cohort/real_heads.py).

Fetches every head (cached; see ``defacing_assets.cohort.real_heads``), defaces it
with each method (seed 0, no labels: hnc_safe protects its atlas OAR regions),
runs the QC that ``qc_labels`` runs, prints one markdown table per head and
writes each method's five-view render montage to
``benchmarks/renders/real_heads/<head>_<method>.png`` (``original`` is the
"before" picture).

Usage: python benchmarks/real_heads.py [--methods original pydeface hnc_safe]
       [--heads promed_ct_0051 papaya_pd_fse] [--out benchmarks/renders/real_heads]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from defacing_assets.cohort.real_heads import REAL_HEADS, fetch
from defacing_assets.defacers.registry import registry
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.render import montage, save_png
from defacing_assets.qc.verdict import assess

SEED = 0
RENDERS = Path(__file__).parent / "renders" / "real_heads"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _row(method: str, verdict, result) -> dict:
    faces = [name for name, view in verdict.views.items() if view["face_detected"]]
    row = {
        "method": method,
        "faces found (views)": ", ".join(faces) or "none",
        **{
            f"{feature} removed": _yes_no(getattr(verdict, f"{feature}_removed"))
            for feature in ("eyes", "nose", "mouth")
        },
    }
    # Per-feature surface kept, where this QC version measures it on the render landmarks.
    for feature in ("eyes", "nose", "mouth"):
        kept = getattr(verdict, f"{feature}_surface_kept", None)
        if kept is not None:
            row[f"{feature} surface kept"] = f"{kept:.0%}"
    distance, kept = verdict.identity_distance, verdict.face_surface_kept
    row["identity distance"] = "-" if distance is None else f"{distance:.3f}"
    row["facial surface kept"] = "-" if kept is None else f"{kept:.0%}"
    row["voxels changed"] = f"{result.changed_fraction:.2%}"
    row["seconds"] = round(result.seconds, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["original", "pydeface", "hnc_safe"])
    parser.add_argument("--heads", nargs="+", default=list(REAL_HEADS))
    parser.add_argument("--out", type=Path, default=RENDERS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    detector = FaceDetector()
    known = registry()
    for name in args.heads:
        head, scan = REAL_HEADS[name], fetch(name)
        rows = []
        for method in args.methods:
            result = known[method].defacer.seeded(SEED).deface(scan.image, scan.modality, None)
            verdict = assess(scan, result, method, detector, seed=SEED)
            rows.append(_row(method, verdict, result))
            if verdict.renders:
                save_png(montage(verdict.renders), args.out / f"{name}_{method}.png")
        print(
            f"\n{head.title} ({head.registry} {head.package} {head.version}, {head.licence}; "
            f"{head.description}); QC landmarks: {verdict.landmark_source}\n"
        )
        print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
