"""The precision self-check on this machine, per profile, fresh (no cache).

Prints, for each profile's network, the reduced precision tried, the verdict and
its numbers: largest relative loss difference and gradient error against
float32 over the repeats, the spread between repeats, and seconds. Run it
``--times`` over to see how often a faulty kernel shows.

Usage:
    python benchmarks/precision_check.py [--profiles ci demo] [--times 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from defacing_assets.profiles import PROFILES, get_profile
from defacing_assets.segmentation.precision import self_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["ci", "demo"], choices=list(PROFILES))
    parser.add_argument("--times", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.profiles:
        for attempt in range(1, args.times + 1):
            verdict = self_check(get_profile(name), torch.device(args.device))
            rows.append(
                {
                    "profile": name,
                    "run": attempt,
                    "tried": verdict.candidate,
                    "chosen": verdict.precision,
                    "loss diff": f"{verdict.max_loss_difference:.2g}",
                    "gradient error": f"{verdict.max_gradient_error:.3g}",
                    "repeat spread": f"{verdict.repeat_spread:.3g}",
                    "seconds": verdict.seconds,
                    "reason": verdict.reason,
                }
            )
    print(f"machine: {verdict.machine}, torch {verdict.torch_version}, {args.threads} thread(s)")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
