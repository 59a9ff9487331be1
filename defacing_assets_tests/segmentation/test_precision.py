"""The precision self-check: reduced precision only where its numbers match float32 here."""

from __future__ import annotations

import pytest
import torch

from defacing_assets.profiles import get_profile
from defacing_assets.segmentation import precision
from defacing_assets.segmentation.precision import (
    BFLOAT16,
    FLOAT32,
    REPEATS,
    choose_precision,
    record_training_failure,
    self_check,
)

CPU = torch.device("cpu")
PROFILE = get_profile("ci")
REFERENCE = torch.linspace(-1.0, 1.0, 50)


def _fake_backward(monkeypatch, reduced_gradients: list[torch.Tensor]) -> list[str]:
    """Float32 gives REFERENCE; the reduced-precision calls give ``reduced_gradients`` in turn."""
    calls: list[str] = []
    monkeypatch.setattr(precision, "reduced_precision", lambda device: BFLOAT16)

    def backward(network, image, label, device, name):
        calls.append(name)
        if name == FLOAT32:
            return 2.0, REFERENCE.clone()
        return 2.001, reduced_gradients[(len(calls) - 2) % len(reduced_gradients)]

    monkeypatch.setattr(precision, "_loss_and_gradient", backward)
    return calls


def test_sound_reduced_precision_is_chosen(monkeypatch) -> None:
    calls = _fake_backward(monkeypatch, [REFERENCE * 1.05])
    verdict = self_check(PROFILE, CPU)
    assert verdict.passed and verdict.precision == BFLOAT16
    assert verdict.max_gradient_error == pytest.approx(0.05, rel=1e-4)
    assert verdict.repeat_spread == 0.0
    assert calls == [FLOAT32] + [BFLOAT16] * REPEATS


def test_one_exploding_gradient_in_the_repeats_means_float32(monkeypatch) -> None:
    exploded = REFERENCE.clone()
    exploded[7] = 1e33
    _fake_backward(monkeypatch, [REFERENCE, REFERENCE, exploded])
    verdict = self_check(PROFILE, CPU)
    assert not verdict.passed and verdict.precision == FLOAT32
    assert "gradient off in 2 of 8 repeats" in verdict.reason


def test_unrepeatable_cpu_gradients_mean_float32(monkeypatch) -> None:
    _fake_backward(monkeypatch, [REFERENCE * 1.01, REFERENCE * 1.0100001])
    verdict = self_check(PROFILE, CPU)
    assert verdict.precision == FLOAT32 and "not repeatable" in verdict.reason


def test_the_verdict_is_cached_and_a_training_failure_overrides_it(monkeypatch, tmp_path) -> None:
    calls = _fake_backward(monkeypatch, [REFERENCE])
    first = choose_precision(PROFILE, CPU, tmp_path)
    assert choose_precision(PROFILE, CPU, tmp_path) == first
    assert len(calls) == 1 + REPEATS, "the second choice read the cache"
    record_training_failure(first, "epoch 3, step 2: loss nan", PROFILE, CPU, tmp_path)
    later = choose_precision(PROFILE, CPU, tmp_path)
    assert later.precision == FLOAT32 and "epoch 3, step 2: loss nan" in later.reason
    assert len(calls) == 1 + REPEATS


def test_a_device_without_reduced_precision_runs_float32_unchecked(monkeypatch) -> None:
    monkeypatch.setattr(precision, "reduced_precision", lambda device: FLOAT32)
    verdict = self_check(PROFILE, CPU)
    assert verdict.precision == FLOAT32 and verdict.passed and verdict.repeats == 0
