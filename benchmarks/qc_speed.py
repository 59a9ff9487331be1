"""QC seconds per scan (five renders plus detection) at each profile's spacing.

Usage: python benchmarks/qc_speed.py [profile ...]
"""

from __future__ import annotations

import sys
import time

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.render import render_views


def main(profiles: list[str]) -> None:
    detector = FaceDetector()
    warm = generate_subject("W", 9, seed=2, profile="ci")[0]
    detector.detect_views(render_views(warm.image, "MR"))
    for profile in profiles:
        scan = generate_subject("Q", 0, seed=2, profile=profile)[0]
        started = time.perf_counter()
        views = render_views(scan.image, scan.modality)
        rendered = time.perf_counter()
        detections = detector.detect_views(views)
        done = time.perf_counter()
        faces = [name for name, d in detections.items() if d.face_detected]
        print(
            f"| {profile} | {'x'.join(map(str, scan.image.shape))} | {rendered - started:.2f} "
            f"| {done - rendered:.2f} | {done - started:.2f} | {', '.join(faces) or 'none'} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["ci", "demo", "paper"])
