"""Every stored U-Net of a study: the precision it trained in, its fallbacks and its gate.

Reads ``<store>/unet_models/defacer=*/fold=*/{config.json,history.parquet}`` and
prints one row per model (precision started and ended in, float32 fallbacks,
non-finite history values, epochs, best epoch, validation Dice at the best epoch
and its maximum, quality verdict), then the mean best validation Dice per method.

Usage:
    python benchmarks/model_health.py demo_study/store
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def model_rows(store: Path) -> pd.DataFrame:
    rows = []
    for folder in sorted(store.glob("unet_models/defacer=*/fold=*")):
        config = json.loads((folder / "config.json").read_text())
        history = pd.read_parquet(folder / "history.parquet")
        values = history[["train_loss", "val_loss", "val_dice"]].to_numpy(dtype=float)
        precision = config.get("precision", {})
        rows.append(
            {
                "defacer": config["defacer"],
                "fold": config["fold"],
                "self-check": precision.get("self_check", {}).get("reason", "-"),
                "started": precision.get("started", "-"),
                "ended": precision.get("final", "-"),
                "fallbacks": len(precision.get("fallbacks", [])),
                "non-finite values": int((~np.isfinite(values)).sum()),
                "epochs": len(history),
                "best epoch": config["best_epoch"] + 1,
                "val Dice at best": round(float(history["val_dice"].iloc[config["best_epoch"]]), 3),
                "max val Dice": round(float(history["val_dice"].max()), 3),
                "quality": "passed" if config.get("quality", {}).get("passed") else "failed",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    models = model_rows(parser.parse_args().store)
    print(models.to_markdown(index=False))
    means = models.groupby("defacer")[["val Dice at best", "max val Dice"]].mean().round(3)
    print()
    print(means.to_markdown())


if __name__ == "__main__":
    main()
