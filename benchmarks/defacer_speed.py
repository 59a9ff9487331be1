"""Seconds per subject for every defacer that can run here, at demo and paper spacing.

Measured, not asserted; results go to benchmarks/RESULTS.md.
Usage: python benchmarks/defacer_speed.py [--profiles demo paper] [--subjects 2] [--methods M ...]
"""

from __future__ import annotations

import argparse
import time

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.registry import registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", nargs="+", default=["demo", "paper"])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every runnable one")
    args = parser.parse_args()
    runnable = {
        name: entry.defacer
        for name, entry in sorted(registry().items())
        if entry.defacer.available()[0] and (not args.methods or name in args.methods)
    }
    for method in runnable.values():  # load models once, outside the timings
        method.deface(generate_subject("WARM", 99, seed=1, profile="ci")[0].image)
    print("| method | profile | grid | seconds per subject (each) | status |")
    print("|---|---|---|---|---|")
    for profile in args.profiles:
        scans = [
            generate_subject(f"B{i}", i, seed=1, profile=profile)[0] for i in range(args.subjects)
        ]
        for name, method in runnable.items():
            seconds, statuses = [], []
            for scan in scans:
                started = time.perf_counter()
                result = method.deface(scan.image, scan.modality, scan.labels)
                seconds.append(time.perf_counter() - started)
                statuses.append(result.status)
            shape = "x".join(map(str, scans[0].image.shape))
            each = ", ".join(f"{s:.1f}" for s in seconds)
            print(f"| {name} | {profile} | {shape} | {each} | {', '.join(statuses)} |", flush=True)


if __name__ == "__main__":
    main()
