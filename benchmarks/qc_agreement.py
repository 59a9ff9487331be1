"""QC against ground truth on a materialized study, and QC seconds per scan.

Truth for a synthetic subject: eyes, nose and mouth regions all removed, judged
at the generator's ground-truth landmarks. The automated verdict is what a
real cohort gets: detectors on five renders plus the regions judged at the
template's landmarks carried in by registration (not the ground truth).

Usage: python benchmarks/qc_agreement.py --study demo_study
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from defacing_assets.imaging import load_volume
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.landmarks import landmarks_from_template, regions_removed
from defacing_assets.qc.render import render_views


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--study", default="demo_study")
    parser.add_argument("--seed", type=int, default=0, help="the study's seed (registration)")
    args = parser.parse_args()
    study = Path(args.study)
    detector = FaceDetector()
    agree, total, seconds = defaultdict(int), defaultdict(int), []
    carried_cache: dict[str, dict] = {}
    for folder in sorted((study / "store" / "defaced_scans").glob("defacer=*/subject=*")):
        method = folder.parent.name.split("=", 1)[1]
        subject = folder.name.split("=", 1)[1]
        if not (folder / "image.nii.gz").exists():
            continue
        original = load_volume(study / "data" / subject / "image.nii.gz")
        truth_marks = json.loads((study / "data" / subject / "landmarks.json").read_text())
        kept = load_volume(folder / "kept_mask.nii.gz")
        defaced = load_volume(folder / "image.nii.gz")
        truth = all(regions_removed(original, kept, truth_marks, "MR").values())
        if subject not in carried_cache:
            carried_cache[subject] = landmarks_from_template(original, args.seed)
        started = time.perf_counter()
        views = render_views(defaced, "MR")
        face = any(d.face_detected for d in detector.detect_views(views).values())
        seconds.append(time.perf_counter() - started)
        regions = regions_removed(original, kept, carried_cache[subject], "MR")
        automated = (not face) and all(regions.values())
        total[method] += 1
        agree[method] += automated == truth
        print(f"{subject} {method}: truth {truth}, automated {automated} (face {face})", flush=True)
    print("\n| method | pairs | QC agrees with truth |\n|---|---|---|")
    for method in sorted(total):
        print(f"| {method} | {total[method]} | {100 * agree[method] / total[method]:.0f}% |")
    overall = 100 * sum(agree.values()) / max(sum(total.values()), 1)
    print(f"| all | {sum(total.values())} | {overall:.1f}% |")
    print(f"\nrender 5 views + detect: {sum(seconds) / len(seconds):.2f} s per defaced scan (mean)")


if __name__ == "__main__":
    main()
