"""Figures as PNG bytes (headless matplotlib), for metadata, files and the report."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from defacing_assets.imaging.thumbnail import figure_png


def loss_curves(history: pd.DataFrame, title: str, best_epoch: int | None = None) -> bytes:
    """Training and validation loss (left) and validation Dice (right) per epoch."""
    figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    epochs = history["epoch"] + 1
    loss_axis.plot(epochs, history["train_loss"], label="train")
    loss_axis.plot(epochs, history["val_loss"], label="validation")
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    loss_axis.legend(fontsize=8)
    dice_axis.plot(epochs, history["val_dice"], color="tab:green")
    dice_axis.set_ylim(0, 1)
    dice_axis.set_xlabel("epoch")
    dice_axis.set_ylabel("mean validation Dice (8 OARs)")
    if best_epoch is not None:
        for axis in (loss_axis, dice_axis):
            axis.axvline(best_epoch + 1, color="grey", linestyle=":", linewidth=1)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)
