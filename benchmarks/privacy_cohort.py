"""Privacy and anatomy on a fresh synthetic cohort: the measures of the real-heads issue.

Generates ``--subjects`` subjects with a seed of its own (one never used to tune a
method), defaces each with every method asked for (seeded), runs the QC that
``qc_labels`` runs, and prints:

- how often the detector finds the face on the originals;
- the identity distance between different subjects' originals (median and range:
  real people measure about 0.6 with dlib's descriptor; lower means the cohort's
  faces are too alike for re-identification to mean much);
- per method: faces found in any view; eyes / nose / mouth / jaw removed by the
  render-landmark check (dlib's 68 points on the original's render) and the median
  share of each feature's surface unchanged; eyes / nose / mouth removed by the 3-D
  check (ground-truth landmarks), the second opinion; OAR voxels changed, rank-1
  re-identification against all originals beside chance, and seconds per subject.

Usage:
    python benchmarks/privacy_cohort.py --subjects 30 --seed 101 --profile demo \
        [--methods original pydeface hnc_safe] [--workers 2] [--out rows.csv]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from itertools import combinations

import numpy as np
import pandas as pd

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.registry import registry
from defacing_assets.evaluation.reidentification import (
    descriptors,
    rank1_reidentification,
    rate_text,
)
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.features import FEATURES
from defacing_assets.qc.verdict import RENDER_LANDMARKS, assess


def _subject_rows(job: tuple[int, int, str, list[str], float]) -> list[dict]:
    index, seed, profile, methods, short_fov_share = job
    scan, params = generate_subject(f"P{index:03d}", index, seed, profile, "MR", short_fov_share)
    detector = FaceDetector()
    known = registry()
    rows = []
    for method in methods:
        defacer = known[method].defacer.seeded(seed)
        result = defacer.deface(scan.image, scan.modality, scan.labels)
        row = assess(scan, result, method, detector, seed=seed).row()
        kept = result.kept_mask.array > 0 if result.kept_mask is not None else None
        oar = scan.labels.array > 0
        row["oar_voxels_changed"] = int((oar & ~kept).sum()) if kept is not None else -1
        row["seconds"] = round(result.seconds, 2)
        row["fov_kind"] = params["fov_kind"]
        row["largest_pose_deg"] = float(np.abs(params["rotation_deg"]).max())
        rows.append(row)
    return rows


def _count(rows: pd.DataFrame, column: str, among: pd.Series | None = None) -> str:
    """Removed out of judged; ``among`` picks the rows whose verdict came from that check."""
    judged = rows if among is None else rows[among]
    return f"{int(judged[column].eq(True).sum())}/{len(judged)}"


def _between_subjects(qc: pd.DataFrame) -> np.ndarray:
    originals = descriptors(qc[qc["defacer"] == "original"]).values()
    return np.array([np.linalg.norm(a - b) for a, b in combinations(originals, 2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--methods", nargs="+", default=["original", "pydeface", "hnc_safe"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--short-fov-share",
        type=float,
        default=0.2,
        help="share of subjects whose field of view ends at the mouth or the nose",
    )
    parser.add_argument("--out", default=None, help="write every QC row as CSV")
    args = parser.parse_args()
    methods = ["original", *[m for m in args.methods if m != "original"]]
    jobs = [
        (index, args.seed, args.profile, methods, args.short_fov_share)
        for index in range(args.subjects)
    ]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        qc = pd.DataFrame([row for rows in pool.map(_subject_rows, jobs) for row in rows])
    if args.out:
        qc.to_csv(args.out, index=False)
    originals = qc[qc["defacer"] == "original"]
    distances = _between_subjects(qc)
    print(
        f"{args.subjects} subjects, seed {args.seed}, profile {args.profile}: face found on "
        f"{originals['face_detected'].mean():.0%} of originals; identity distance between "
        f"different subjects: median {np.median(distances):.3f} "
        f"(range {distances.min():.3f}-{distances.max():.3f}, {len(distances)} pairs)"
        if len(distances)
        else "no two originals with a described face"
    )
    unseen = originals[~originals["face_detected"].astype(bool)]
    for _, row in unseen.iterrows():
        print(
            f"  no face found on original {row['subject']}: field of view ends at the "
            f"{row['fov_kind']}, largest pose angle {row['largest_pose_deg']:.1f} degrees"
        )
    rates = rank1_reidentification(qc).set_index("defacer")
    summary = []
    for method in methods:
        rows = qc[qc["defacer"] == method]
        rendered = rows["landmark_source"] == RENDER_LANDMARKS
        summary.append(
            {
                "method": method,
                "face found (any view)": f"{int(rows['face_detected'].sum())}/{len(rows)}",
                **{
                    f"{feature} removed (render)": _count(rows, f"{feature}_removed", rendered)
                    for feature in FEATURES
                },
                **{
                    f"{feature} kept (median)": round(
                        float(rows[f"{feature}_surface_kept"].astype(float).median()), 2
                    )
                    for feature in FEATURES
                },
                **{
                    f"{feature} removed (3-D)": _count(rows, f"{feature}_removed_3d")
                    for feature in ("eyes", "nose", "mouth")
                },
                "OAR voxels changed": int(rows["oar_voxels_changed"].sum()),
                "re-identified (rank 1)": rate_text(rates, method),
                "median identity distance": round(float(rows["identity_distance"].median()), 3),
                "s per subject": round(float(rows["seconds"].mean()), 1),
            }
        )
    print(pd.DataFrame(summary).to_markdown(index=False))


if __name__ == "__main__":
    main()
