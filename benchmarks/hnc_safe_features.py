"""Choose hnc_safe's refacing on a tuning cohort: which settings change every facial feature?

Generates ``--subjects`` varied synthetic subjects from ``--seed`` (a tuning seed: never the
one a result is reported on), runs hnc_safe with each combination of ``--smoothing`` and
``--lower-face`` (mm under the template's mouth that the shallow lips-and-chin band reaches;
5 turns the band off), and prints per setting: faces found in any view, eyes / nose / mouth
removed by the render-landmark check (dlib's 68 points on the original's frontal render),
the median share of each feature's surface left unchanged, the worst mouth, OAR voxels
changed, volume changed, the share of it that turned from head to air (a model notices
carving more than filling) and seconds per subject.

Usage:
    python benchmarks/hnc_safe_features.py --subjects 10 --seed 5 \
        --smoothing 20 30 --lower-face 5 45 [--workers 2]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from itertools import product

import numpy as np
import pandas as pd

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.hnc_safe import HncSafe, head_mask
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.verdict import assess


def _subject_rows(job: tuple[int, int, list[tuple[float, float]]]) -> list[dict]:
    index, seed, settings = job
    scan, _ = generate_subject(f"T{index:03d}", index, seed, "demo")
    detector = FaceDetector()
    rows = []
    for smoothing, lower_face in settings:
        defacer = HncSafe(smoothing_mm=smoothing, lower_face_mm=lower_face, seed=seed)
        result = defacer.deface(scan.image, scan.modality, scan.labels)
        verdict = assess(scan, result, "hnc_safe", detector, seed=seed)
        changed = result.kept_mask.array == 0
        carved = head_mask(scan.image, scan.modality) & ~head_mask(result.image, scan.modality)
        rows.append(
            {
                "smoothing_mm": smoothing,
                "lower_face_mm": lower_face,
                "subject": scan.subject_id,
                "original_face": verdict.original_face_detected,
                "face_found": verdict.face_detected,
                **{f"{f}_removed": getattr(verdict, f"{f}_removed") for f in ("eyes", "nose")},
                "mouth_removed": verdict.mouth_removed,
                **{f"{f}_kept": verdict.surface_kept(f) for f in ("eyes", "nose", "mouth", "jaw")},
                "oar_voxels_changed": int((changed & (scan.labels.array > 0)).sum()),
                "changed_ml": float(changed.sum()) * scan.image.voxel_volume_ml,
                "carved_share": float(carved.sum()) / max(int(changed.sum()), 1),
                "seconds": result.seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--smoothing", type=float, nargs="+", default=[20.0, 30.0])
    parser.add_argument("--lower-face", type=float, nargs="+", default=[5.0, 45.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="write every row as CSV")
    args = parser.parse_args()
    settings = list(product(args.smoothing, args.lower_face))
    jobs = [(index, args.seed, settings) for index in range(args.subjects)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = pd.DataFrame([row for rows in pool.map(_subject_rows, jobs) for row in rows])
    if args.out:
        rows.to_csv(args.out, index=False)
    judged = rows[rows["original_face"]]
    summary = []
    for (smoothing, lower_face), group in judged.groupby(["smoothing_mm", "lower_face_mm"]):
        summary.append(
            {
                "smoothing mm": smoothing,
                "lower face mm": lower_face,
                "faces found": f"{int(group['face_found'].sum())}/{len(group)}",
                **{
                    f"{f} removed": f"{int(group[f'{f}_removed'].sum())}/{len(group)}"
                    for f in ("eyes", "nose", "mouth")
                },
                **{
                    f"{f} kept (median)": round(float(np.median(group[f"{f}_kept"])), 2)
                    for f in ("eyes", "nose", "mouth", "jaw")
                },
                "mouth kept (worst)": round(float(group["mouth_kept"].max()), 2),
                "OAR voxels changed": int(group["oar_voxels_changed"].sum()),
                "ml changed (median)": round(float(group["changed_ml"].median()), 1),
                "turned to air (median share)": round(float(group["carved_share"].median()), 2),
                "s per subject": round(float(group["seconds"].mean()), 1),
            }
        )
    print(
        f"seed {args.seed}, {args.subjects} subjects (demo profile); judged where the original "
        f"shows a face: {len(judged) // len(settings)} of {args.subjects}"
    )
    print(pd.DataFrame(summary).to_markdown(index=False))


if __name__ == "__main__":
    main()
