"""Training on tiny synthetic subjects: it learns, saves, resumes exactly, never lets a
non-finite step reach the weights, and never runs code from a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchio.transforms.augmentation.spatial.random_flip import _ensure_axes_indices

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import get_profile
from defacing_assets.segmentation import train
from defacing_assets.segmentation.data import augmentation, make_subject
from defacing_assets.segmentation.model import build_unet
from defacing_assets.segmentation.precision import BFLOAT16, FLOAT32, choose_precision
from defacing_assets.segmentation.train import (
    CHECKPOINT_NAME,
    HISTORY_COLUMNS,
    MODEL_FILES,
    NonFiniteTrainingError,
    load_model,
    save_model,
    train_model,
)

EPOCHS = 4
INTERRUPT_AFTER = 2
PROFILE = dataclasses.replace(get_profile("ci"), max_epochs=EPOCHS, patience=EPOCHS)


class Interrupted(Exception):
    """Stands in for a killed process."""


@pytest.fixture(scope="module")
def subjects() -> list:
    """Three ci subjects; originals stand in for the defaced images."""
    out = []
    for index in range(3):
        scan, _ = generate_subject(f"seg{index}", index, 11, profile="ci")
        out.append(
            make_subject(scan.image, scan.labels, None, PROFILE, "original", key=f"seg{index}/orig")
        )
    return out


@pytest.fixture(scope="module")
def uninterrupted(subjects, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = train_model(subjects[:2], subjects[2:], PROFILE, seed=3, checkpoint_dir=folder)
    return result, folder


def test_training_lowers_validation_loss_and_saves(uninterrupted, tmp_path: Path) -> None:
    result, _ = uninterrupted
    history = result.history
    assert list(history.columns) == HISTORY_COLUMNS
    assert list(history.epoch) == list(range(EPOCHS))
    assert history.val_loss.iloc[-1] < history.val_loss.iloc[0]
    assert result.best_epoch == int(history.val_loss.idxmin())

    save_model(tmp_path / "model", dataclasses.replace(result, config={"seed": 3}))
    assert {p.name for p in (tmp_path / "model").iterdir()} == set(MODEL_FILES)
    loaded = load_model(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.history, history)
    assert loaded.config == {"seed": 3, "best_epoch": result.best_epoch}
    for name, weights in result.model_state.items():
        assert torch.equal(loaded.model_state[name], weights), name
    with pytest.raises(FileNotFoundError, match="missing model.pt"):
        load_model(tmp_path)


def test_kill_and_resume_reproduces_history(uninterrupted, subjects, tmp_path: Path) -> None:
    reference, reference_dir = uninterrupted
    lines: list[str] = []

    def interrupting_log(line: str) -> None:
        lines.append(line)
        if line.startswith(f"epoch {INTERRUPT_AFTER}/"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(subjects[:2], subjects[2:], PROFILE, 3, tmp_path, log=interrupting_log)
    partial = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert partial["epoch"] == INTERRUPT_AFTER - 1
    assert partial["optimizer"]["state"], "optimizer moments were checkpointed"

    resumed = train_model(subjects[:2], subjects[2:], PROFILE, 3, tmp_path, log=lines.append)
    assert any(line.startswith("resuming after epoch") for line in lines)
    columns = ["epoch", "train_loss", "val_loss", "val_dice"]
    pd.testing.assert_frame_equal(resumed.history[columns], reference.history[columns])
    assert resumed.best_epoch == reference.best_epoch

    # The optimizer was restored, not re-initialised: step counts and moments match.
    final = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    expected = torch.load(reference_dir / CHECKPOINT_NAME, weights_only=True)
    for key, moments in expected["optimizer"]["state"].items():
        for name, value in moments.items():
            np.testing.assert_array_equal(
                final["optimizer"]["state"][key][name].numpy(), value.numpy(), err_msg=name
            )
    for name, value in expected["model"].items():
        assert torch.equal(final["model"][name], value), name


def test_kept_policy_and_flip_axes(subjects) -> None:
    """'kept' drops labels outside the kept mask; flips name IS and AP anatomically."""
    scan, _ = generate_subject("seg0", 0, 11, profile="ci")
    cut = int(np.median(np.nonzero(scan.labels.array)[1]))  # halve the OARs along A-P
    kept_array = np.zeros(scan.labels.shape, np.uint8)
    kept_array[:, :cut] = 1
    kept = scan.labels.with_array(kept_array)
    original = make_subject(scan.image, scan.labels, kept, PROFILE, "original")
    restricted = make_subject(scan.image, scan.labels, kept, PROFILE, "kept")
    assert 0 < int((restricted["label"].data > 0).sum()) < int((original["label"].data > 0).sum())
    flip = augmentation().transforms[1]
    assert _ensure_axes_indices(subjects[0], flip.axes) == [1, 2]  # A and S of an RAS grid


def test_the_precision_this_machine_chooses_trains_the_demo_unet_finitely(tmp_path: Path) -> None:
    """Two epochs of the demo U-Net in the precision the self-check picks here: no step needs
    the float32 fallback and the history is finite (on an AVX512-BF16 CPU without AMX,
    bfloat16 gave 1e33 gradients and every demo model trained on NaN)."""
    profile = dataclasses.replace(get_profile("demo"), max_epochs=2, patience=2)
    chosen = choose_precision(profile, torch.device("cpu")).precision
    demo_subjects = []
    for index in range(3):
        scan, _ = generate_subject(f"demo{index}", index, 11, profile="ci")
        demo_subjects.append(make_subject(scan.image, scan.labels, None, profile, "original"))
    result = train_model(
        demo_subjects[:2], demo_subjects[2:], profile, 3, tmp_path, precision=chosen
    )
    assert result.fallbacks == [], result.fallbacks
    assert list(result.history["precision"]) == [chosen, chosen]
    assert np.isfinite(result.history[["train_loss", "val_loss", "val_dice"]]).all().all()


class NaNOutput:
    """A forward hook that spoils the network's training output from the ``after``-th call on,
    only in reduced precision unless ``always``: a stand-in for a faulty kernel.

    Reduced precision is simulated (float32 arithmetic under the reduced label), so the test
    does not depend on whether this machine's bfloat16 is itself healthy."""

    def __init__(self, after: int, always: bool = False) -> None:
        self.after, self.always, self.calls, self.reduced = after, always, 0, False

    def __call__(self, module, inputs, output):
        if not module.training:
            return None
        self.calls += 1
        if self.calls >= self.after and (self.always or self.reduced):
            return output * float("nan")
        return None

    @contextlib.contextmanager
    def autocast(self, device: torch.device, precision: str):
        self.reduced = precision != FLOAT32
        with torch.autocast(device.type, enabled=False):
            yield


def _spoiled_unet(monkeypatch, hook: NaNOutput) -> None:
    def build(features):
        model = build_unet(features)
        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train, "build_unet", build)
    monkeypatch.setattr(train, "autocast", hook.autocast)


def test_a_non_finite_step_falls_back_to_float32_and_the_history_says_so(
    subjects, tmp_path: Path, monkeypatch
) -> None:
    steps_per_epoch = 2 * PROFILE.samples_per_volume // PROFILE.batch_size
    _spoiled_unet(monkeypatch, NaNOutput(after=steps_per_epoch + 1))
    lines: list[str] = []
    result = train_model(
        subjects[:2], subjects[2:], PROFILE, 3, tmp_path, log=lines.append, precision=BFLOAT16
    )
    assert [f["epoch"] for f in result.fallbacks] == [1]
    assert result.fallbacks[0]["from"] == BFLOAT16 and "loss nan" in result.fallbacks[0]["reason"]
    assert list(result.history["precision"]) == [BFLOAT16] + [FLOAT32] * (EPOCHS - 1)
    assert list(result.history["epoch"]) == list(range(EPOCHS))
    assert np.isfinite(result.history[["train_loss", "val_loss", "val_dice"]]).all().all()
    assert result.precision == FLOAT32
    assert any("continuing in float32" in line for line in lines), lines
    for name, weights in result.model_state.items():
        assert torch.isfinite(weights.float()).all(), name


def test_non_finite_float32_training_fails_without_a_model(
    subjects, tmp_path: Path, monkeypatch
) -> None:
    _spoiled_unet(monkeypatch, NaNOutput(after=3, always=True))
    with pytest.raises(NonFiniteTrainingError, match="non-finite in float32 at epoch 2"):
        train_model(subjects[:2], subjects[2:], PROFILE, 3, tmp_path, precision=FLOAT32)


def test_a_field_of_view_shorter_than_the_window_is_padded_with_air() -> None:
    """A scan ending at the mouth is 30 slices tall at 6 mm; the patch sampler needs 32."""
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    image = np.full((40, 40, 30), 100.0, dtype=np.float32)
    image[:, :, :5] = 0.0
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[20, 20, 10] = 3
    subject = make_subject(Volume(image, affine), Volume(labels, affine), None, PROFILE, "original")
    assert subject["image"].spatial_shape == (40, 40, 32)
    assert float(subject["image"].data[..., 0].max()) == -1.0, "padding is the darkest value"
    ((i, j, k),) = np.argwhere(subject["label"].data[0].numpy() == 3)
    world = subject["label"].affine @ [i, j, k, 1]
    np.testing.assert_allclose(world[:3], [120.0, 120.0, 60.0])


ONE_EPOCH = dataclasses.replace(PROFILE, max_epochs=1, patience=1)


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _one_epoch(subjects, folder: Path, lines: list[str]) -> train.TrainingResult:
    return train_model(
        subjects[:2], subjects[2:], ONE_EPOCH, 3, folder, log=lines.append, precision=FLOAT32
    )


def test_a_crafted_checkpoint_runs_no_code_and_training_starts_clean(
    subjects, tmp_path: Path
) -> None:
    """A checkpoint.pt whose unpickling would run a command, where training resumes from:
    nothing runs, the file is moved aside and named, and training starts at epoch 1."""
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / CHECKPOINT_NAME
    torch.save({"epoch": 5, "model": RunsCode(marker)}, checkpoint)
    crafted = checkpoint.read_bytes()
    lines: list[str] = []
    try:
        result = _one_epoch(subjects, tmp_path, lines)
    finally:
        assert not marker.exists(), "loading the checkpoint ran code"
    assert list(result.history["epoch"]) == [0]
    [moved] = tmp_path.glob(f"{CHECKPOINT_NAME}.corrupt-*")
    assert moved.read_bytes() == crafted, "kept aside for inspection"
    assert any(
        str(checkpoint) in line and "unsafe content refused" in line and moved.name in line
        for line in lines
    ), lines
    assert not any(line.startswith("resuming") for line in lines)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0, "a fresh checkpoint"


def test_a_truncated_checkpoint_is_named_set_aside_and_the_retry_starts_clean(
    uninterrupted, subjects, tmp_path: Path
) -> None:
    """A torn checkpoint no longer fails every retry with an error naming no file."""
    _, reference_dir = uninterrupted
    whole = (reference_dir / CHECKPOINT_NAME).read_bytes()
    checkpoint = tmp_path / CHECKPOINT_NAME
    checkpoint.write_bytes(whole[: len(whole) // 2])
    lines: list[str] = []
    result = _one_epoch(subjects, tmp_path, lines)
    assert list(result.history["epoch"]) == [0]
    [moved] = tmp_path.glob(f"{CHECKPOINT_NAME}.corrupt-*")
    assert len(moved.read_bytes()) == len(whole) // 2
    assert any(str(checkpoint) in line and "PytorchStreamReader" in line for line in lines), lines

    lines.clear()
    again = _one_epoch(subjects, tmp_path, lines)  # the checkpoint it wrote is used as is
    assert lines[0].startswith("resuming after epoch 1 "), lines
    pd.testing.assert_frame_equal(again.history, result.history)


def test_a_checkpoint_is_fsynced_before_its_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch
) -> None:
    checkpoint = tmp_path / CHECKPOINT_NAME
    synced: list[tuple[bool, bool]] = []
    real = os.fsync

    def recording(descriptor: int) -> None:
        synced.append((stat.S_ISDIR(os.fstat(descriptor).st_mode), checkpoint.exists()))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    train._write_checkpoint(checkpoint, {"epoch": 0, "model": {"w": torch.zeros(2)}})
    assert synced == [(False, False), (True, True)]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0
