"""Seconds and peak memory to synthesise one subject per profile (measured, not asserted).

Usage: python benchmarks/synth_speed.py [profile ...]
"""

from __future__ import annotations

import resource
import sys
import time

from defacing_assets.cohort.phantom import head_phantom
from defacing_assets.cohort.synthetic import generate_subject


def main(profiles: list[str]) -> None:
    started = time.perf_counter()
    head_phantom("MR")
    print(f"phantom build: {time.perf_counter() - started:.1f} s")
    for profile in profiles:
        started = time.perf_counter()
        scan, _ = generate_subject("BENCH", 0, seed=0, profile=profile)
        seconds = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"{profile}: {seconds:.1f} s per subject, shape {scan.image.shape}, "
            f"peak RSS so far {peak_gb:.2f} GB"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["ci", "demo", "paper"])
