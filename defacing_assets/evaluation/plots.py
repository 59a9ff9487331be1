"""Figures as PNG bytes (headless matplotlib), for metadata, files and the report."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from defacing_assets.evaluation.tables import BASELINE, ExperimentTable
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


def oar_bars(table: ExperimentTable, metric_label: str, title: str) -> bytes:
    """Mean and SD per OAR and method, N above each bar, a bracket with the
    significance symbol between ``original`` and each other method."""
    if table.summary.empty:
        return _nothing_compared(table, title)
    means, sds = table.summary["mean"], table.summary["std"]
    methods = list(means.columns)
    oars = list(means.index)
    figure, axis = plt.subplots(
        figsize=(max(6, 1.3 * len(oars) * max(len(methods), 1)), 4), dpi=100
    )
    width = 0.8 / max(len(methods), 1)
    counts = table.comparisons.set_index(["oar", "group_b"])
    top = float((means + sds.fillna(0)).max().max()) if len(oars) else 1.0
    for offset, method in enumerate(methods):
        positions = np.arange(len(oars)) + offset * width
        axis.bar(
            positions, means[method], width, yerr=sds[method].fillna(0), capsize=2, label=method
        )
        tops = (means[method] + sds[method].fillna(0)).fillna(0)
        counts_of_method = table.summary["count"][method].fillna(0)
        for x, bar_top, n in zip(positions, tops, counts_of_method, strict=True):
            axis.text(x, bar_top + 0.01 * top, f"N={int(n)}", ha="center", va="bottom", fontsize=6)
    baseline = methods.index(BASELINE) if BASELINE in methods else None
    for index, oar in enumerate(oars):
        for offset, method in enumerate(methods):
            if baseline is None or method == BASELINE or (oar, method) not in counts.index:
                continue
            left = index + baseline * width
            right = index + offset * width
            height = top * (1.05 + 0.08 * offset)
            axis.plot(
                [left, left, right, right],
                [height - 0.02 * top, height, height, height - 0.02 * top],
                color="black",
                linewidth=0.8,
            )
            axis.text(
                (left + right) / 2,
                height,
                counts.loc[(oar, method), "symbol"],
                ha="center",
                va="bottom",
                fontsize=7,
            )
    axis.set_xticks(np.arange(len(oars)) + width * (len(methods) - 1) / 2)
    axis.set_xticklabels(oars, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(metric_label)
    axis.set_ylim(0, top * (1.2 + 0.08 * len(methods)))
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    if table.dropped:
        figure.text(
            0.01,
            0.01,
            "dropped: " + "; ".join(f"{k} ({v})" for k, v in table.dropped.items()),
            fontsize=6,
        )
    figure.tight_layout()
    return figure_png(figure)


def _nothing_compared(table: ExperimentTable, title: str) -> bytes:
    """A figure that says why there are no bars (e.g. the model every bar needs failed),
    so the figure file still exists and is not mistaken for a result."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.axis("off")
    axis.set_title(title, fontsize=10)
    reasons = [f"{key}: {reason}" for key, reason in table.dropped.items()]
    axis.text(
        0.5,
        0.5,
        "\n".join(["Nothing compared.", *reasons]),
        ha="center",
        va="center",
        fontsize=8,
        wrap=True,
    )
    return figure_png(figure)
