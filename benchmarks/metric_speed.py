"""Our four segmentation metrics against MedPy: same values, how much faster.

MedPy's private ``__surface_distances`` gives the one-way distances over the full volume;
they are averaged the study's way (two one-way means, one-way 95th percentiles), so both
columns must agree to 1e-6 mm. Ours crops to the joint bounding box first. Structures are
OAR-sized ellipsoids; the prediction is shifted, rescaled and has a few bumps.

Usage: python benchmarks/metric_speed.py [--size 512] [--slices 100] [--repeats 1]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from medpy.metric import binary as medpy_binary

from defacing_assets.evaluation.metrics import dice, surface_metrics

SPACING = (0.5, 0.5, 2.0)
TOLERANCE_MM = 1e-6
# name, centre as a fraction of the grid extent, semi-axes in mm (about 20, 8 and 3 ml)
STRUCTURES = [
    ("parotid-like", (0.35, 0.45, 0.5), (18.0, 13.0, 20.0)),
    ("submandibular-like", (0.65, 0.6, 0.4), (14.0, 11.0, 12.0)),
    ("node-level-like", (0.5, 0.3, 0.6), (8.0, 7.0, 12.0)),
]
_surface_distances = getattr(medpy_binary, "__surface_distances")


def _ellipsoid(shape, centre_mm, radii_mm) -> np.ndarray:
    """Boolean ellipsoid, evaluated only in its bounding box (full-grid floats are slow)."""
    mask = np.zeros(shape, dtype=bool)
    box = []
    for n, s, c, r in zip(shape, SPACING, centre_mm, radii_mm, strict=True):
        box.append(slice(max(int((c - r) / s) - 1, 0), min(int((c + r) / s) + 2, n)))
    grids = np.ogrid[tuple(box)]
    total = sum(
        ((g * s - c) / r) ** 2
        for g, s, c, r in zip(grids, SPACING, centre_mm, radii_mm, strict=True)
    )
    mask[tuple(box)] = total <= 1.0
    return mask


def make_pair(shape, centre_frac, radii_mm, rng) -> tuple[np.ndarray, np.ndarray]:
    """Reference ellipsoid and a plausible prediction of it."""
    centre = [f * n * s for f, n, s in zip(centre_frac, shape, SPACING, strict=True)]
    ref = _ellipsoid(shape, centre, radii_mm)
    shifted = [c + rng.uniform(-1.5, 1.5) for c in centre]
    scaled = [r * rng.uniform(0.9, 1.1) for r in radii_mm]
    pred = _ellipsoid(shape, shifted, scaled)
    for _ in range(4):  # small bumps so the two surfaces differ in shape, not only position
        surface = np.argwhere(ref)
        point = surface[rng.integers(len(surface))] * np.asarray(SPACING)
        pred |= _ellipsoid(shape, point, [rng.uniform(2.0, 4.0)] * 2 + [4.0])
    return pred, ref


def ours(pred, ref) -> dict[str, float]:
    """All four metrics as segmentation_metrics computes them (one distance pass)."""
    distances = surface_metrics(pred, ref, SPACING)
    return {
        "dice": dice(pred, ref),
        "msd": distances.mean_surface_distance,
        "hd95": distances.hausdorff95,
        "mean_hd95": distances.mean_hausdorff95,
    }


def medpy(pred, ref) -> dict[str, float]:
    to_ref = _surface_distances(pred, ref, SPACING)
    to_pred = _surface_distances(ref, pred, SPACING)
    p95 = (float(np.percentile(to_ref, 95)), float(np.percentile(to_pred, 95)))
    return {
        "dice": float(medpy_binary.dc(pred, ref)),
        "msd": 0.5 * (float(to_ref.mean()) + float(to_pred.mean())),
        "hd95": max(p95),
        "mean_hd95": 0.5 * sum(p95),
    }


def best_time(fn, pred, ref, repeats) -> tuple[float, dict[str, float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        values = fn(pred, ref)
        times.append(time.perf_counter() - started)
    return min(times), values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="in-plane voxels per axis")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = (args.size, args.size, args.slices)
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore", FutureWarning)
    ours(*make_pair((32, 32, 8), (0.5, 0.5, 0.5), (3.0, 3.0, 4.0), rng))  # import MONAI/torch

    grid = "x".join(map(str, shape))
    print(f"grid {grid} at {'x'.join(map(str, SPACING))} mm, best of {args.repeats}")
    print(
        "| structure | ref ml | Dice | MSD mm (ours / MedPy) | HD95 mm (ours / MedPy) "
        "| mean HD95 mm (ours / MedPy) | max abs diff mm | ours s | MedPy s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, centre_frac, radii in STRUCTURES:
        pred, ref = make_pair(shape, centre_frac, radii, rng)
        t_ours, v_ours = best_time(ours, pred, ref, args.repeats)
        t_medpy, v_medpy = best_time(medpy, pred, ref, args.repeats)
        diff = max(abs(v_ours[k] - v_medpy[k]) for k in v_ours)
        worst = max(worst, diff)
        ml = ref.sum() * float(np.prod(SPACING)) / 1000.0
        cells = [
            name,
            f"{ml:.1f}",
            f"{v_ours['dice']:.4f}",
            *(f"{v_ours[k]:.6f} / {v_medpy[k]:.6f}" for k in ("msd", "hd95", "mean_hd95")),
            f"{diff:.1e}",
            f"{t_ours:.3f}",
            f"{t_medpy:.3f}",
            f"{t_medpy / t_ours:.1f}x",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    if worst > TOLERANCE_MM:
        print(f"FAIL: values differ by {worst:.2e} mm > {TOLERANCE_MM:g} mm", file=sys.stderr)
        return 1
    print(f"values agree (max abs difference {worst:.1e} mm <= {TOLERANCE_MM:g} mm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
