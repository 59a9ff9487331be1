"""The study's 3D U-Net (MONAI BasicUNet configured as in the paper)."""

from __future__ import annotations

from collections.abc import Sequence

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
