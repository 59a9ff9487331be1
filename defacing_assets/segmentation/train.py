"""Training loop: patch training, whole-volume validation, early stopping, resumable.

One code path for CPU and CUDA (mixed precision on both where the hardware has it;
CUDA adds loss scaling, cudnn.benchmark and pinned
memory). Every epoch ends with an atomically written checkpoint holding the
weights, optimizer, RNG states and history, so a killed run resumes at the
next epoch and, on CPU with a fixed seed, reproduces the uninterrupted history.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchio as tio
from monai.inferers import sliding_window_inference
from torch.utils.data import DataLoader
from upath import UPath

from defacing_assets.imaging.atomic import atomic_write_bytes
from defacing_assets.profiles import Profile
from defacing_assets.segmentation.data import IMAGE, LABEL, augmentation
from defacing_assets.segmentation.model import N_CLASSES, build_unet, mixed_precision

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "seconds"]


@dataclass
class TrainingResult:
    model_state: dict
    """Weights of the best epoch (lowest validation loss), on CPU."""
    history: pd.DataFrame
    """One row per epoch: epoch, train_loss, val_loss, val_dice, seconds."""
    best_epoch: int
    config: dict = field(default_factory=dict)
    """What produced it (profile, spacing, label table, versions, seed, subjects)."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (TorchIO and the Queue draw from torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_states() -> dict:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _cpu_state(module_or_optimizer) -> dict:
    return copy.deepcopy(
        {
            k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
            for k, v in module_or_optimizer.state_dict().items()
        }
    )


def _write_checkpoint(path: Path, state: dict) -> None:
    """Temp file in the same folder + os.replace: a kill never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _dice_per_class(prediction: torch.Tensor, label: torch.Tensor) -> list[float]:
    """Dice of each OAR (classes 1..8); nan where both are empty."""
    scores = []
    for c in range(1, N_CLASSES):
        p = prediction == c
        t = label == c
        denominator = int(p.sum() + t.sum())
        scores.append(float("nan") if denominator == 0 else 2.0 * int((p & t).sum()) / denominator)
    return scores


def whole_volume_logits(
    model: torch.nn.Module, image: torch.Tensor, profile: Profile
) -> torch.Tensor:
    """Logits (1, 9, ...) of a whole pre-processed volume (1, 1, ...) by sliding window.

    Windows are the training patch size, so instance norm sees what it saw in training.
    """
    return sliding_window_inference(
        image,
        roi_size=profile.patch_size,
        sw_batch_size=profile.batch_size,
        predictor=model,
        overlap=0.25,
    ).float()


def validate(
    model: torch.nn.Module,
    subjects: Sequence[tio.Subject],
    profile: Profile,
    device: torch.device,
) -> tuple[float, float]:
    """Mean cross-entropy and mean OAR Dice on whole volumes (sliding window)."""
    model.eval()
    losses, dices = [], []
    with torch.no_grad(), mixed_precision(device):
        for subject in subjects:
            image = subject[IMAGE].data[None].float().to(device)
            label = subject[LABEL].data[None, 0].long().to(device)
            logits = whole_volume_logits(model, image, profile)
            losses.append(float(torch.nn.functional.cross_entropy(logits, label)))
            dices.append(_dice_per_class(logits.argmax(1).cpu(), label.cpu()))
    model.train()
    per_subject = [np.nanmean(d) if not np.all(np.isnan(d)) else np.nan for d in dices]
    mean_dice = float(np.nanmean(per_subject)) if not np.all(np.isnan(per_subject)) else math.nan
    return float(np.mean(losses)), mean_dice


def patch_loader(subjects: Sequence[tio.Subject], profile: Profile, pin_memory: bool) -> DataLoader:
    """A fresh queue per epoch, so an epoch's randomness depends only on the RNG state."""
    # Centres drawn per class, background included: every OAR, however small,
    # is the centre of 1/9 of the patches, and background still dominates voxels.
    sampler = tio.LabelSampler(
        profile.patch_size,
        label_name=LABEL,
        label_probabilities={c: 1.0 for c in range(N_CLASSES)},
    )
    queue = tio.Queue(
        tio.SubjectsDataset(list(subjects), transform=augmentation()),
        max_length=profile.queue_length,
        samples_per_volume=profile.samples_per_volume,
        sampler=sampler,
        num_workers=0,
        shuffle_subjects=True,
        shuffle_patches=True,
        start_background=False,
    )
    return DataLoader(queue, batch_size=profile.batch_size, num_workers=0, pin_memory=pin_memory)


def train_model(
    train_subjects: Sequence[tio.Subject],
    val_subjects: Sequence[tio.Subject],
    profile: Profile,
    seed: int,
    checkpoint_dir: str | Path,
    log: Callable[[str], object] = print,
    device: str | torch.device | None = None,
) -> TrainingResult:
    """Train the U-Net; resume from ``checkpoint_dir`` when a checkpoint is there.

    Cross-entropy over 9 classes, Adam (``profile.learning_rate``, AMSGrad), early stopping after
    ``profile.patience`` epochs without validation-loss improvement or at
    ``profile.max_epochs``. ``log`` gets one line per epoch, after that epoch's
    checkpoint is written (an exception raised there interrupts cleanly).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    seed_everything(seed)
    model = build_unet(profile.features).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=profile.learning_rate, betas=(0.9, 0.999), amsgrad=True
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_cuda)
    loss_function = torch.nn.CrossEntropyLoss()

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    history: list[dict] = []
    best_state = _cpu_state(model)
    best_val_loss, best_epoch, stale, finished = math.inf, -1, 0, False
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, best_state = state["history"], state["best_state"]
        best_val_loss, best_epoch = state["best_val_loss"], state["best_epoch"]
        stale, finished = state["stale"], state["finished"]
        _set_rng_states(state["rng"])
        log(f"resuming after epoch {state['epoch'] + 1} (best epoch {best_epoch + 1})")

    model.train()
    epoch = len(history)
    while not finished:
        started = time.perf_counter()
        total, count = 0.0, 0
        for batch in patch_loader(train_subjects, profile, pin_memory=use_cuda):
            image = batch[IMAGE][tio.DATA].float().to(device, non_blocking=True)
            label = batch[LABEL][tio.DATA][:, 0].long().to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with mixed_precision(device):
                loss = loss_function(model(image).float(), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(label)
            count += len(label)
        val_loss, val_dice = validate(model, val_subjects, profile, device)
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "val_loss": val_loss,
                "val_dice": val_dice,
                "seconds": seconds,
            }
        )
        if val_loss < best_val_loss:
            best_val_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = _cpu_state(model)
        else:
            stale += 1
        finished = stale >= profile.patience or epoch + 1 >= profile.max_epochs
        _write_checkpoint(
            checkpoint_path,
            {
                "epoch": epoch,
                "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "best_state": best_state,
                "best_val_loss": best_val_loss,
                "best_epoch": best_epoch,
                "stale": stale,
                "finished": finished,
                "rng": _rng_states(),
                "seed": seed,
                "profile": profile.name,
            },
        )
        mean_seconds = float(np.mean([row["seconds"] for row in history]))
        remaining = min(profile.max_epochs - epoch - 1, profile.patience - stale)
        log(
            f"epoch {epoch + 1}/{profile.max_epochs}: train loss {history[-1]['train_loss']:.4f}"
            f", val loss {val_loss:.4f}, val dice {val_dice:.3f}, best epoch {best_epoch + 1}"
            f", {seconds:.1f} s, ETA <= {0 if finished else remaining * mean_seconds:.0f} s"
        )
        epoch += 1

    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    return TrainingResult(model_state=best_state, history=frame, best_epoch=best_epoch)


MODEL_FILES = ("model.pt", "config.json", "history.parquet")


def save_model(directory: str | Path | UPath, result: TrainingResult) -> None:
    """Write ``model.pt`` (best weights), ``config.json``, ``history.parquet``, atomically."""
    directory = UPath(directory)
    buffer = io.BytesIO()
    torch.save(result.model_state, buffer)
    atomic_write_bytes(directory / "model.pt", buffer.getvalue())
    payload = {**result.config, "best_epoch": int(result.best_epoch)}
    atomic_write_bytes(
        directory / "config.json", json.dumps(payload, indent=2, default=str).encode()
    )
    buffer = io.BytesIO()
    result.history.to_parquet(buffer, engine="pyarrow", index=False)
    atomic_write_bytes(directory / "history.parquet", buffer.getvalue())


def load_model(directory: str | Path | UPath) -> TrainingResult:
    """Read what :func:`save_model` wrote; names the folder and file when one is missing."""
    directory = UPath(directory)
    missing = [name for name in MODEL_FILES if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(f"{directory}: not a saved model, missing {', '.join(missing)}")
    state = torch.load(io.BytesIO((directory / "model.pt").read_bytes()), weights_only=True)
    config = json.loads((directory / "config.json").read_text())
    history = pd.read_parquet(io.BytesIO((directory / "history.parquet").read_bytes()))
    return TrainingResult(state, history, int(config["best_epoch"]), config)
