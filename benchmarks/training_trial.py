"""One training run on fold 0 of the demo cohort, with profile fields overridden.

How the ``demo`` profile was chosen: each candidate trains on the original
images of fold 0 (9 training, 3 validation subjects of the 15-subject demo
cohort, seed 0) and the per-epoch log shows when the mean validation Dice
passes 0.6; the final line gives the per-OAR Dice of the best epoch.

Usage:
    python benchmarks/training_trial.py [--data DIR] [--set key=value ...]
    e.g. --set features=16,16,32,64,128,16 --set max_epochs=40 --set training_spacing=3
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from defacing_assets.cohort.labels import OAR_LABELS
from defacing_assets.cohort.sources import discover_subjects, read_scan
from defacing_assets.cohort.synthetic import write_cohort
from defacing_assets.evaluation.cohort import assign_folds, fold_roles
from defacing_assets.profiles import Profile, get_profile
from defacing_assets.segmentation.data import IMAGE, LABEL, make_subject
from defacing_assets.segmentation.infer import load_network
from defacing_assets.segmentation.train import train_model, whole_volume_logits

FOLD = 0


def overridden(profile: Profile, assignments: list[str]) -> Profile:
    """``key=value`` pairs on a profile; tuples as comma lists."""
    changes = {}
    for assignment in assignments:
        key, value = assignment.split("=", 1)
        current = getattr(profile, key)
        if isinstance(current, tuple):
            changes[key] = tuple(type(current[0])(v) for v in value.split(","))
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(profile, **changes)


def per_oar_dice(model, subjects, profile) -> np.ndarray:
    """Mean Dice per OAR over the validation subjects (nan where absent)."""
    network = load_network(model)
    scores = []
    with torch.no_grad():
        for subject in subjects:
            predicted = whole_volume_logits(network, subject[IMAGE].data[None].float(), profile)
            predicted = predicted.argmax(1)[0]
            label = subject[LABEL].data[0]
            row = []
            for value in OAR_LABELS.values():
                total = int((predicted == value).sum() + (label == value).sum())
                overlap = int(((predicted == value) & (label == value)).sum())
                row.append(2 * overlap / total if total else np.nan)
            scores.append(row)
    return np.nanmean(scores, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="benchmarks/.demo_cohort")
    parser.add_argument("--set", action="append", default=[], dest="assignments")
    args = parser.parse_args()
    profile = overridden(get_profile("demo"), args.assignments)
    data = Path(args.data)
    if not data.exists():
        write_cohort(data, n_subjects=15, seed=0, profile="demo")
    sources, _ = discover_subjects(data)
    folds = assign_folds([source.subject_id for source in sources], 5, 0)
    roles = fold_roles(FOLD, 5)
    prepared = {}
    for source in sources:
        scan = read_scan(source)
        prepared[source.subject_id] = make_subject(scan.image, scan.labels, None, profile)
    train = [prepared[s] for s, f in folds.items() if f in roles["train"]]
    validation = [prepared[s] for s, f in folds.items() if f in roles["validation"]]
    print(profile, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        result = train_model(train, validation, profile, 0, folder, log=print)
    result.config = {"profile": dataclasses.asdict(profile)}
    best = result.history.iloc[result.best_epoch]
    print(
        f"best epoch {result.best_epoch + 1}: val Dice {best['val_dice']:.3f}; "
        f"{result.history['seconds'].sum():.0f} s in all"
    )
    dice = per_oar_dice(result, validation, profile)
    print(" ".join(f"{name} {value:.2f}" for name, value in zip(OAR_LABELS, dice, strict=True)))


if __name__ == "__main__":
    main()
