"""The study's 3D U-Net (MONAI BasicUNet configured as in the paper)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet

N_CLASSES = 9
"""Background plus the 8 OARs."""


def build_unet(features: Sequence[int]) -> BasicUNet:
    """BasicUNet: 4 down/4 up blocks, instance norm, LeakyReLU 0.1, transposed-conv upsampling."""
    return BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=N_CLASSES,
        features=tuple(features),
        act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm=("instance", {"affine": True}),
        upsample="deconv",
    )


def mixed_precision(device: torch.device) -> torch.autocast:
    """Autocast for the U-Net's forward pass: float16 on CUDA, bfloat16 on CPUs that have it.

    On CPUs with AVX512-BF16/AMX, oneDNN runs bfloat16 3D convolutions 1.5-1.9x
    faster than float32 (benchmarks/RESULTS.md); elsewhere CPU stays float32.
    """
    if device.type == "cuda":
        return torch.autocast("cuda")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=_cpu_has_bfloat16())


@functools.cache
def _cpu_has_bfloat16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
