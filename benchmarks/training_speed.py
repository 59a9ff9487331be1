"""U-Net training speed: seconds per iteration (waiting for data vs computing) and per epoch.

An epoch is ``train subjects x samples_per_volume / batch_size`` iterations plus
whole-volume validation. ``demo`` runs one real epoch on a demo-sized split;
``paper`` times a few iterations and one validation volume and extrapolates the
epoch to the study's split (29 subjects: about 17 train, 6 validate).

Usage: python benchmarks/training_speed.py [profile ...] [--iterations N]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.profiles import get_profile
from defacing_assets.segmentation.data import IMAGE, LABEL, make_subject
from defacing_assets.segmentation.model import build_unet
from defacing_assets.segmentation.train import patch_loader, train_model, validate

SPLITS = {"demo": (9, 3), "paper": (17, 6), "ci": (3, 1)}
"""(train, validation) subjects of one fold: demo's 15 subjects and the paper's 29."""


def subjects(profile, count: int):
    made = []
    for index in range(count):
        scan, _ = generate_subject(f"B{index}", index, seed=4, profile=profile.name)
        made.append(make_subject(scan.image, scan.labels, None, profile))
    return made


def time_iterations(profile, train, iterations: int) -> tuple[float, float]:
    """Mean seconds per iteration waiting for the batch and computing the step."""
    model = build_unet(profile.features)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    waits, computes = [], []
    loader = iter(patch_loader(train, profile, pin_memory=False))
    for _ in range(iterations + 1):  # the first step warms up and is not counted
        started = time.perf_counter()
        batch = next(loader)
        loaded = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(batch[IMAGE]["data"].float()), batch[LABEL]["data"][:, 0].long()
        )
        loss.backward()
        optimizer.step()
        waits.append(loaded - started)
        computes.append(time.perf_counter() - loaded)
    return sum(waits[1:]) / iterations, sum(computes[1:]) / iterations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profiles", nargs="*", default=["demo", "paper"])
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(
        "| profile | iteration: data s | iteration: compute s | iterations/epoch "
        "| validation s/volume | epoch s | how |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.profiles:
        profile = get_profile(name)
        n_train, n_val = SPLITS[name]
        measured_train, measured_val = (3, 1) if name == "paper" else (n_train, n_val)
        made = subjects(profile, measured_train + measured_val)
        train, val = made[:measured_train], made[measured_train:]
        wait, compute = time_iterations(profile, train, args.iterations)
        per_epoch = n_train * profile.samples_per_volume // profile.batch_size
        started = time.perf_counter()
        validate(build_unet(profile.features), val, profile, torch.device("cpu"))
        val_seconds = (time.perf_counter() - started) / len(val)
        if name == "paper":
            epoch = per_epoch * (wait + compute) + n_val * val_seconds
            how = f"extrapolated from {args.iterations} iterations"
        else:
            one_epoch = dataclasses.replace(profile, max_epochs=1)
            with tempfile.TemporaryDirectory() as folder:
                result = train_model(train, val, one_epoch, 0, folder, log=lambda _: None)
            epoch = float(result.history["seconds"].iloc[0])
            how = "one real epoch"
        print(
            f"| {name} | {wait:.3f} | {compute:.3f} | {per_epoch} | {val_seconds:.2f} "
            f"| {epoch:.1f} | {how} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
