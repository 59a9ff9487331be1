"""Which floating-point precision the U-Net runs in on this machine, decided by numbers.

A CPU flag is no proof. On an AVX512-BF16 CPU without AMX, oneDNN's bfloat16
weight gradient of the U-Net's bottleneck convolution returned values near
1e33 in about half of the calls on the very same batch (float32 never did), and
every demo model trained on NaN. So reduced precision (bfloat16 on CPU, float16
on CUDA) is used only after a self-check of the study's network passes on this
machine: forward and backward on one fixed batch, repeated, in float32 and in
the reduced precision; every loss and gradient finite, each reduced run within
:data:`LOSS_TOLERANCE` and :data:`GRADIENT_TOLERANCE` of float32 and, on CPU,
the repeats bitwise identical as float32's are (the study's runs must repeat;
the same CPU's bfloat16 gradients also differed between calls). The verdict is
cached per machine, torch version and network, and a model whose training still
went non-finite in reduced precision marks the cache as failed
(:func:`record_training_failure`), so the next model starts in float32.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from upath import UPath

from defacing_assets.imaging.atomic import atomic_write_bytes
from defacing_assets.profiles import Profile
from defacing_assets.segmentation.model import N_CLASSES, build_unet

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"
DTYPES = {BFLOAT16: torch.bfloat16, FLOAT16: torch.float16}

LOSS_TOLERANCE = 0.01
"""Largest relative difference of a reduced-precision loss from the float32 loss."""
GRADIENT_TOLERANCE = 0.25
"""Largest relative L2 error of the whole reduced-precision gradient against float32's.
A sound bfloat16 backward of the demo U-Net differs by 0.04-0.08 (benchmarks/RESULTS.md)."""
REPEATS = 8
"""Reduced-precision backward passes of the same batch: the faulty kernel above went wrong
in one to six of eight calls in each of five fresh processes."""
CHECK_SEED = 20240601
"""Seeds the self-check's network and batch, so it is the same check on every machine."""


@dataclass(frozen=True)
class PrecisionVerdict:
    """What the self-check found and which precision follows from it."""

    precision: str
    """The precision to use: ``float32``, ``bfloat16`` or ``float16``."""
    candidate: str
    """The reduced precision that was checked; ``float32`` when the device offers none."""
    passed: bool
    reason: str
    repeats: int = 0
    max_loss_difference: float = float("nan")
    """Largest relative loss difference from float32 over the repeats."""
    max_gradient_error: float = float("nan")
    """Largest relative L2 gradient error against float32 over the repeats (inf if non-finite)."""
    repeat_spread: float = float("nan")
    """Largest absolute difference between the repeats' gradients (CPU float32 gives 0)."""
    seconds: float = 0.0
    machine: str = ""
    torch_version: str = torch.__version__

    def as_dict(self) -> dict:
        return asdict(self)


def reduced_precision(device: torch.device) -> str:
    """The faster precision a device offers: float16 on CUDA, bfloat16 on CPUs with it."""
    if device.type == "cuda":
        return FLOAT16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return BFLOAT16
    return FLOAT32


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast for the U-Net in ``precision`` (disabled for float32)."""
    if precision == FLOAT32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[precision])


def machine_description(device: torch.device) -> str:
    """The processor (model name and instruction-set flags) or the GPU the verdict is for."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = ".".join(map(str, torch.cuda.get_device_capability(index)))
        return f"{torch.cuda.get_device_name(index)} (compute capability {capability})"
    model, flags = platform.processor() or platform.machine(), ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model.startswith("model"):
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.strip()
                break
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model} (flags {digest})"


def _loss_and_gradient(
    network: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    device: torch.device,
    precision: str,
) -> tuple[float, torch.Tensor]:
    model = copy.deepcopy(network)
    with autocast(device, precision):
        logits = model(image)
    loss = torch.nn.functional.cross_entropy(logits.float(), label)
    loss.backward()
    gradient = torch.cat([p.grad.detach().float().flatten() for p in model.parameters()])
    return float(loss.detach()), gradient.cpu()


def self_check(profile: Profile, device: torch.device, repeats: int = REPEATS) -> PrecisionVerdict:
    """Compare reduced precision with float32 on the profile's network and one training batch
    of random patches (fixed by :data:`CHECK_SEED`)."""
    candidate = reduced_precision(device)
    machine = machine_description(device)
    if candidate == FLOAT32:
        return PrecisionVerdict(
            FLOAT32, FLOAT32, True, "no reduced precision on this device", machine=machine
        )
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(CHECK_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CHECK_SEED)
        network = build_unet(profile.features).to(device)
    batch_size, patch_size = profile.batch_size, profile.patch_size
    shape = (batch_size, 1, *patch_size)
    image = (torch.randn(shape, generator=generator).clamp(-1, 1)).to(device)
    label = torch.randint(0, N_CLASSES, (batch_size, *patch_size), generator=generator).to(device)
    reference_loss, reference_gradient = _loss_and_gradient(network, image, label, device, FLOAT32)
    reference_norm = float(reference_gradient.norm())
    loss_differences, gradient_errors, spread, first = [], [], 0.0, None
    for _ in range(repeats):
        loss, gradient = _loss_and_gradient(network, image, label, device, candidate)
        loss_differences.append(abs(loss - reference_loss) / abs(reference_loss))
        finite = bool(torch.isfinite(gradient).all())
        error = float((gradient - reference_gradient).norm()) / reference_norm
        gradient_errors.append(error if finite else math.inf)
        first = gradient if first is None else first
        spread = max(spread, float((gradient - first).abs().max()) if finite else math.inf)
    worst_loss, worst_gradient = max(loss_differences), max(gradient_errors)
    failures = []
    if not all(map(math.isfinite, loss_differences)):
        failures.append("non-finite loss")
    elif worst_loss > LOSS_TOLERANCE:
        failures.append(f"loss differs by {worst_loss:.3g} (tolerance {LOSS_TOLERANCE})")
    bad = sum(not (error <= GRADIENT_TOLERANCE) for error in gradient_errors)
    if bad:
        failures.append(
            f"gradient off in {bad} of {repeats} repeats (largest relative error "
            f"{worst_gradient:.3g}, tolerance {GRADIENT_TOLERANCE})"
        )
    elif device.type == "cpu" and spread > 0:
        failures.append(f"not repeatable: the same batch's gradients differ by up to {spread:.3g}")
    passed = not failures
    return PrecisionVerdict(
        precision=candidate if passed else FLOAT32,
        candidate=candidate,
        passed=passed,
        reason=f"{candidate} matches float32" if passed else f"{candidate}: " + "; ".join(failures),
        repeats=repeats,
        max_loss_difference=worst_loss,
        max_gradient_error=worst_gradient,
        repeat_spread=spread,
        seconds=round(time.perf_counter() - started, 2),
        machine=machine,
    )


def _cache_file(cache_dir: str | Path, device: torch.device, profile: Profile) -> Path:
    network = [profile.features, profile.patch_size, profile.batch_size]
    key = json.dumps([machine_description(device), torch.__version__, network])
    return Path(cache_dir) / f"precision-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def choose_precision(
    profile: Profile, device: str | torch.device, cache_dir: str | Path | None = None
) -> PrecisionVerdict:
    """The precision to train and infer in here: the cached verdict, or a fresh self-check."""
    device = torch.device(device)
    path = None if cache_dir is None else _cache_file(cache_dir, device, profile)
    if path is not None and path.exists():
        return PrecisionVerdict(**json.loads(path.read_text()))
    verdict = self_check(profile, device)
    if path is not None:
        _store(path, verdict)
    return verdict


def record_training_failure(
    verdict: PrecisionVerdict,
    reason: str,
    profile: Profile,
    device: str | torch.device,
    cache_dir: str | Path | None,
) -> PrecisionVerdict:
    """Training in the verdict's precision went non-finite: later models here use float32."""
    failed = PrecisionVerdict(
        **{
            **verdict.as_dict(),
            "precision": FLOAT32,
            "passed": False,
            "reason": f"{verdict.candidate} passed the self-check but training went "
            f"non-finite: {reason}",
        }
    )
    if cache_dir is not None:
        _store(_cache_file(cache_dir, torch.device(device), profile), failed)
    return failed


def _store(path: Path, verdict: PrecisionVerdict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(UPath(path), json.dumps(verdict.as_dict(), indent=1).encode())
