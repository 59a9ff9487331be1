"""Choose hnc_safe's shell depth, fill and smoothing from measurements.

For each setting, every demo subject is defaced with its labels, and pydeface's
template without labels (atlas protection), then QC'd exactly as the
``qc_labels`` asset does (detectors on five renders, eyes/nose/mouth at the
ground-truth landmarks, facial surface kept). The smallest change that passes
QC everywhere is the default.

Usage: python benchmarks/hnc_safe_depth.py --data demo_study/data [--subjects 5]
       [--depths 5,10] [--fills blank,smooth] [--smoothing 50,80]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd

from defacing_assets.cohort.phantom import head_phantom, template_path
from defacing_assets.cohort.scan import Scan
from defacing_assets.cohort.sources import discover_subjects, read_scan
from defacing_assets.defacers.hnc_safe import HncSafe
from defacing_assets.imaging import load_volume
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.verdict import assess

TEMPLATE = "pydeface template"


def _template_scan() -> Scan:
    """pydeface's template as a scan without labels, landmarks from the phantom."""
    phantom = head_phantom("MR")
    landmarks = {
        name: (phantom.affine[:3, :3] @ index + phantom.affine[:3, 3]).tolist()
        for name, index in phantom.landmarks_index.items()
    }
    return Scan(TEMPLATE, load_volume(str(template_path())), None, "MR", landmarks, [], {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="demo_study/data")
    parser.add_argument("--subjects", type=int, default=0, help="first N subjects (0: all)")
    parser.add_argument("--depths", default="5,10,15")
    parser.add_argument("--fills", default="blank,smooth")
    parser.add_argument("--smoothing", default="50")
    args = parser.parse_args()
    sources, _ = discover_subjects(args.data)
    sources = sources[: args.subjects] if args.subjects else sources
    scans = [read_scan(source) for source in sources] + [_template_scan()]
    detector = FaceDetector()
    rows = []
    settings = itertools.product(
        [float(d) for d in args.depths.split(",")],
        args.fills.split(","),
        [float(r) for r in args.smoothing.split(",")],
    )
    for depth, fill, smoothing in settings:
        method = HncSafe(depth_mm=depth, fill=fill, smoothing_mm=smoothing)
        for scan in scans:
            result = method.deface(scan.image, scan.modality, scan.labels)
            verdict = assess(scan, result, "hnc_safe", detector)
            kept = result.kept_mask.array > 0
            labels = scan.labels.array if scan.labels is not None else np.zeros(kept.shape)
            present = np.unique(labels[labels > 0])
            oar_ratio = min((kept[labels == v].mean() for v in present), default=np.nan)
            rows.append(
                {
                    "depth_mm": depth,
                    "fill": fill,
                    "smoothing_mm": smoothing,
                    "subject": scan.subject_id,
                    "seconds": result.seconds,
                    "shell_ml": result.details["shell_ml"],
                    "views_with_face": sum(v["face_detected"] for v in verdict.views.values()),
                    "best_dlib_score": max(
                        (v["dlib_score"] for v in verdict.views.values() if v["dlib_score"]),
                        default=np.nan,
                    ),
                    "regions_removed": bool(
                        verdict.eyes_removed and verdict.nose_removed and verdict.mouth_removed
                    ),
                    "passed": verdict.passed,
                    "face_surface_kept": verdict.face_surface_kept,
                    "face_depth_correlation": verdict.face_depth_correlation,
                    "min_oar_ratio": float(oar_ratio),
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    setting = ["depth_mm", "fill", "smoothing_mm"]
    template = table[table["subject"] == TEMPLATE].set_index(setting)
    summary = (
        table[table["subject"] != TEMPLATE]
        .groupby(setting)
        .agg(
            subjects=("subject", "count"),
            passed=("passed", "mean"),
            view_detection_rate=("views_with_face", lambda v: v.sum() / (5 * len(v))),
            regions_removed=("regions_removed", "mean"),
            best_dlib_score=("best_dlib_score", "max"),
            surface_kept=("face_surface_kept", "mean"),
            depth_correlation=("face_depth_correlation", "mean"),
            shell_ml=("shell_ml", "mean"),
            min_oar_ratio=("min_oar_ratio", "min"),
            seconds=("seconds", "mean"),
        )
    )
    summary["template views with face"] = template["views_with_face"]
    summary["template passed"] = template["passed"]
    summary["template best dlib score"] = template["best_dlib_score"]
    print(f"\n{time.strftime('%Y-%m-%d')}, {len(scans) - 1} subjects from {args.data}")
    print(summary.round(3).to_markdown())


if __name__ == "__main__":
    main()
