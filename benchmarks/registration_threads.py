"""Does the template registration repeat? Same scan, same seed, several runs per ITK thread count.

Runs the registration that pydeface, hnc_safe and QC share on one synthetic subject
``--runs`` times with ITK's thread count forced to each value of ``--threads``
(bypassing the one-thread pin of ``register_template``) and prints the largest
parameter difference from the first run. Reproduces why ``REGISTRATION_THREADS`` is 1.

Usage: python benchmarks/registration_threads.py [--runs 4] [--threads 1 2] [--seed 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from defacing_assets.cohort.phantom import template_path
from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers import pydeface
from defacing_assets.imaging.io import load_volume
from defacing_assets.imaging.resample import to_sitk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args()
    scan, _ = generate_subject("DET001", 0, 17, profile=args.profile)
    fixed = to_sitk(scan.image.with_array(scan.image.array.astype(np.float32)))
    template = to_sitk(load_volume(str(template_path())))
    print("| ITK threads | runs | largest parameter difference from run 1 | s per run |")
    print("|---|---|---|---|")
    for threads in args.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        parameters, started = [], time.perf_counter()
        for _ in range(args.runs):
            transform = pydeface._register(fixed, template, args.seed)
            parameters.append(np.array(transform.GetNthTransform(0).GetParameters()))
        seconds = (time.perf_counter() - started) / args.runs
        spread = max(float(np.abs(p - parameters[0]).max()) for p in parameters)
        print(f"| {threads} | {args.runs} | {spread:.2e} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
