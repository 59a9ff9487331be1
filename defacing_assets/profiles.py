"""Study profiles: one code path, different sizes.

A profile changes voxel spacing, cohort size and training sizes (resolution,
network width, epochs, patches), never the algorithm. ``paper`` is the
published acquisition and network; ``demo`` runs the whole study on a 2-core
machine; ``ci`` is tiny, for tests.

Training samples patches around labels (TorchIO ``LabelSampler`` + ``Queue``)
in every profile: whole-volume training with rare foreground learns slowly (a
planning trial reached a mean validation Dice of only 0.32 after 160 epochs on
4 mm whole volumes), while label-centred patches show every OAR in most
batches. Validation and inference still see whole volumes (sliding window).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    spacing: tuple[float, float, float]
    """Acquisition voxel size of the synthetic cohort in mm (x, y, z)."""
    n_subjects: int
    """Default synthetic cohort size."""
    training_spacing: float = 2.0
    """Isotropic voxel size (mm) the U-Net sees; the paper resamples to 2 mm."""
    features: tuple[int, int, int, int, int, int] = (32, 32, 64, 128, 256, 32)
    """BasicUNet channel widths (paper: MONAI's default)."""
    patience: int = 60
    """Epochs without validation-loss improvement before early stopping."""
    max_epochs: int = 1000
    """Hard cap on epochs (the paper stops by patience only)."""
    learning_rate: float = 1e-3
    """Adam's step size (the paper's 0.001)."""
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (96, 96, 96)
    """Training patch and sliding-window size in voxels: multiples of 16 and at least 32,
    so instance norm at the 1/16 bottleneck sees more than one voxel."""
    samples_per_volume: int = 8
    """Patches drawn from each (augmented) training subject per epoch."""
    queue_length: int = 64
    """Patches held in the TorchIO queue; larger mixes subjects better."""
    min_val_dice: float = 0.5
    """Quality gate: a model whose validation Dice at its best epoch is lower has failed
    and is not used downstream (``segmentation/quality.py``)."""


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper", (0.5, 0.5, 2.0), 55),
    # demo: 4 mm voxels and half the paper's widths; 32^3 patches (128 mm) hold
    # neighbouring OARs for context. Trials on the demo cohort, fold 0, trained
    # on original (2 CPU cores, benchmarks/RESULTS.md): features (8, ..., 8)
    # ran 7 s/epoch and reached a validation Dice of 0.58 by epoch 45; (16, ...,
    # 16) costs 10 s/epoch but reached 0.60 by epoch 27 and 0.74 at epoch 36
    # (the level III nodes, 30-90 voxels at 4 mm, are the last to come). Batch 2
    # is the fastest per voxel on CPU (batch 1 ran 1.9x slower per patch).
    "demo": Profile(
        "demo",
        (1.5, 1.5, 3.0),
        15,
        training_spacing=4.0,
        features=(16, 16, 32, 64, 128, 16),
        patience=10,
        max_epochs=40,
        batch_size=2,
        patch_size=(32, 32, 32),
        samples_per_volume=16,
        queue_length=32,
        min_val_dice=0.3,
    ),
    "ci": Profile(
        "ci",
        (3.0, 3.0, 4.0),
        4,
        training_spacing=6.0,
        features=(4, 4, 8, 16, 32, 4),
        patience=3,
        max_epochs=3,
        batch_size=2,
        patch_size=(32, 32, 32),
        samples_per_volume=2,
        queue_length=8,
        min_val_dice=0.0,
    ),
}


def get_profile(name: str) -> Profile:
    """Look up a profile, naming the valid choices when the name is wrong."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
