"""Training loop: patch training, whole-volume validation, early stopping, resumable.

One code path for CPU and CUDA (reduced precision where this machine's self-check
passed, ``segmentation/precision.py``; float16 adds loss scaling, CUDA adds
cudnn.benchmark and pinned memory). A non-finite step never reaches the weights:
training returns to the last good epoch and goes on in float32. Every epoch ends
with an atomically written checkpoint holding the weights, optimizer, RNG states,
history and precision, so a killed run resumes at the next epoch and, on CPU with
a fixed seed, reproduces the uninterrupted history. A checkpoint holds only tensors and
plain values and is loaded with ``weights_only=True`` (no code runs); one that does not
load or does not fit is moved aside and named in the log, and training starts clean.
"""

from __future__ import annotations

import copy
import dataclasses
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

from defacing_assets.imaging.atomic import atomic_write_bytes, fsync_directory
from defacing_assets.profiles import Profile
from defacing_assets.segmentation.data import IMAGE, LABEL, augmentation
from defacing_assets.segmentation.model import N_CLASSES, build_unet
from defacing_assets.segmentation.precision import FLOAT16, FLOAT32, autocast, choose_precision
from defacing_assets.segmentation.safe_load import load_problem, load_tensors, set_aside

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "seconds", "precision"]


@dataclass
class TrainingResult:
    model_state: dict
    """Weights of the best epoch (lowest validation loss), on CPU."""
    history: pd.DataFrame
    """One row per epoch: epoch, train_loss, val_loss, val_dice, seconds, precision."""
    best_epoch: int
    config: dict = field(default_factory=dict)
    """What produced it (profile, spacing, label table, versions, seed, subjects, precision,
    quality)."""
    precision: str = FLOAT32
    """The precision training ended in."""
    fallbacks: list[dict] = field(default_factory=list)
    """Each switch to float32 after a non-finite step: epoch, from, to, reason."""

    @property
    def failure(self) -> str:
        """Why the model failed its quality gate ("" when it passed or was never gated)."""
        return "; ".join(self.config.get("quality", {}).get("problems", []))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (TorchIO and the Queue draw from torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_states() -> dict:
    """RNG states as tensors and plain values only, so a checkpoint loads with
    ``weights_only=True`` (numpy's state is an ndarray, stored as a tensor)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    states = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
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
    """Temp file in the same folder, fsynced, then os.replace and an fsync of the folder:
    neither a kill nor a power cut leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scaler", "progress", "rng", "seed", "profile")


def read_checkpoint(path: Path, log: Callable[[str], object] = print) -> dict | None:
    """The checkpoint at ``path`` loaded without running code, or ``None`` when there is
    none or it is unusable (truncated, holding anything but tensors and plain values,
    missing entries): that one is moved aside and named in ``log`` so training starts
    clean instead of every retry failing on it."""
    if not path.exists():
        return None
    try:
        state = load_tensors(path)
    except Exception as error:  # truncated zip, refused global, unreadable file
        set_aside(path, load_problem(error), "checkpoint", log)
        return None
    missing = (
        [key for key in CHECKPOINT_KEYS if key not in state]
        if isinstance(state, dict)
        else ["everything (not a dict)"]
    )
    if missing:
        set_aside(path, f"missing {', '.join(missing)}", "checkpoint", log)
        return None
    return state


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
    precision: str = FLOAT32,
) -> tuple[float, float]:
    """Mean cross-entropy and mean OAR Dice on whole volumes (sliding window)."""
    model.eval()
    losses, dices = [], []
    with torch.no_grad(), autocast(device, precision):
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


class NonFiniteTrainingError(RuntimeError):
    """Training went non-finite in float32, so no precision is left to fall back to."""


class _NonFinite(Exception):
    """A step or a validation that must not reach the weights or the history."""


MIN_LOSS_SCALE = 1.0
"""float16 loss scaling overflows by design and the scaler skips those steps; a scale
driven below 1 means the unscaled gradients themselves overflow."""


@dataclass
class _Progress:
    """Everything about a training run besides weights and optimizer, as checkpointed."""

    precision: str
    history: list[dict] = field(default_factory=list)
    best_state: dict = field(default_factory=dict)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    stale: int = 0
    finished: bool = False
    fallbacks: list[dict] = field(default_factory=list)


def _gradient_norm(model: torch.nn.Module) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    subjects: Sequence[tio.Subject],
    profile: Profile,
    device: torch.device,
    precision: str,
) -> float:
    """One epoch of patches; mean training loss. Raises :class:`_NonFinite` before a
    non-finite loss or gradient reaches the weights."""
    total, count = 0.0, 0
    for step, batch in enumerate(patch_loader(subjects, profile, device.type == "cuda"), 1):
        image = batch[IMAGE][tio.DATA].float().to(device, non_blocking=True)
        label = batch[LABEL][tio.DATA][:, 0].long().to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(image)
        loss = torch.nn.functional.cross_entropy(logits.float(), label)
        if not torch.isfinite(loss):
            raise _NonFinite(f"step {step}: loss {float(loss.detach())}")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = _gradient_norm(model)
        if not torch.isfinite(norm) and (
            not scaler.is_enabled() or scaler.get_scale() < MIN_LOSS_SCALE
        ):
            raise _NonFinite(f"step {step}: gradient norm {float(norm)}")
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(label)
        count += len(label)
    return total / max(count, 1)


def train_model(
    train_subjects: Sequence[tio.Subject],
    val_subjects: Sequence[tio.Subject],
    profile: Profile,
    seed: int,
    checkpoint_dir: str | Path,
    log: Callable[[str], object] = print,
    device: str | torch.device | None = None,
    precision: str | None = None,
) -> TrainingResult:
    """Train the U-Net; resume from ``checkpoint_dir`` when a checkpoint is there.

    Cross-entropy over 9 classes, Adam (``profile.learning_rate``, AMSGrad), early stopping after
    ``profile.patience`` epochs without validation-loss improvement or at
    ``profile.max_epochs``. ``log`` gets one line per epoch, after that epoch's
    checkpoint is written (an exception raised there interrupts cleanly).

    ``precision`` (default: :func:`~defacing_assets.segmentation.precision.choose_precision`
    for this machine, uncached) is where training starts. A non-finite loss, gradient or
    validation loss is never applied: the run goes back to the last good epoch and
    continues in float32, recorded in the history's ``precision`` column and in
    ``TrainingResult.fallbacks``; in float32 it raises :class:`NonFiniteTrainingError`.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    if precision is None:
        precision = choose_precision(profile, device).precision

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
        seed_everything(seed)
        model = build_unet(profile.features).to(device)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=profile.learning_rate, betas=(0.9, 0.999), amsgrad=True
        )
        scaler = torch.amp.GradScaler(device.type, enabled=use_cuda and precision == FLOAT16)
        return model, optimizer, scaler

    model, optimizer, scaler = build()

    def snapshot(epoch: int, progress: _Progress) -> dict:
        return {
            "epoch": epoch,
            "model": _cpu_state(model),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "scaler": scaler.state_dict(),
            "progress": dataclasses.asdict(progress),  # plain values: loads weights_only
            "rng": _rng_states(),
            "seed": seed,
            "profile": profile.name,
        }

    def restore(state: dict) -> _Progress:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_states(state["rng"])
        return _Progress(**copy.deepcopy(state["progress"]))

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    progress = None
    last_good = read_checkpoint(checkpoint_path, log)
    if last_good is not None:
        try:
            progress = restore(last_good)
        except Exception as error:  # another network's weights, a malformed entry
            problem = f"cannot resume from it: {type(error).__name__}: {error}".splitlines()[0]
            set_aside(checkpoint_path, problem, "checkpoint", log)
            model, optimizer, scaler = build()  # restore may have loaded part of it
    if progress is not None:
        log(
            f"resuming after epoch {last_good['epoch'] + 1} (best epoch {progress.best_epoch + 1},"
            f" {progress.precision})"
        )
    else:
        progress = _Progress(precision, best_state=_cpu_state(model))
        last_good = snapshot(-1, progress)

    model.train()
    while not progress.finished:
        epoch = len(progress.history)
        started = time.perf_counter()
        try:
            train_loss = _train_epoch(
                model, optimizer, scaler, train_subjects, profile, device, progress.precision
            )
            val_loss, val_dice = validate(model, val_subjects, profile, device, progress.precision)
            if not math.isfinite(val_loss):
                raise _NonFinite(f"validation loss {val_loss}")
        except _NonFinite as problem:
            where = f"epoch {epoch + 1}, {problem}"
            if progress.precision == FLOAT32:
                raise NonFiniteTrainingError(
                    f"training went non-finite in float32 at {where}; no model is stored"
                ) from None
            fallback = {"epoch": epoch, "from": progress.precision, "to": FLOAT32, "reason": where}
            log(
                f"non-finite {progress.precision} training at {where}: back to the state after "
                f"epoch {last_good['epoch'] + 1}, continuing in float32"
            )
            progress = restore(last_good)
            progress.precision = FLOAT32
            progress.fallbacks.append(fallback)
            if scaler.is_enabled():
                scaler = torch.amp.GradScaler(device.type, enabled=False)
            continue
        seconds = time.perf_counter() - started
        progress.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "seconds": seconds,
                "precision": progress.precision,
            }
        )
        if val_loss < progress.best_val_loss:
            progress.best_val_loss, progress.best_epoch, progress.stale = val_loss, epoch, 0
            progress.best_state = _cpu_state(model)
        else:
            progress.stale += 1
        progress.finished = progress.stale >= profile.patience or epoch + 1 >= profile.max_epochs
        last_good = snapshot(epoch, progress)
        _write_checkpoint(checkpoint_path, last_good)
        mean_seconds = float(np.mean([row["seconds"] for row in progress.history]))
        remaining = min(profile.max_epochs - epoch - 1, profile.patience - progress.stale)
        log(
            f"epoch {epoch + 1}/{profile.max_epochs}: train loss {train_loss:.4f}"
            f", val loss {val_loss:.4f}, val dice {val_dice:.3f}, best epoch "
            f"{progress.best_epoch + 1}, {progress.precision}, {seconds:.1f} s, ETA <= "
            f"{0 if progress.finished else remaining * mean_seconds:.0f} s"
        )

    return TrainingResult(
        model_state=progress.best_state,
        history=pd.DataFrame(progress.history, columns=HISTORY_COLUMNS),
        best_epoch=progress.best_epoch,
        precision=progress.precision,
        fallbacks=progress.fallbacks,
    )


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
