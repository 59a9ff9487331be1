"""The paper-profile U-Net is exactly the published architecture."""

from __future__ import annotations

import torch

from defacing_assets.profiles import get_profile
from defacing_assets.segmentation.model import build_unet


def test_paper_unet_architecture() -> None:
    model = build_unet(get_profile("paper").features)
    assert sum(p.numel() for p in model.parameters()) == 5_749_641

    norms = [
        m for m in model.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)
    ]
    assert norms and all(isinstance(n, torch.nn.InstanceNorm3d) and n.affine for n in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    acts = [m for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.1 for a in acts)

    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert len(ups) == 4
    assert all(tuple(u.kernel_size) == (2, 2, 2) and tuple(u.stride) == (2, 2, 2) for u in ups)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool3d)]
    assert len(pools) == 4

    # Encoder: input block + 4 down blocks; decoder: 4 up blocks; then a 1x1x1 conv to 9 classes.
    encoder = [model.conv_0, model.down_1, model.down_2, model.down_3, model.down_4]
    decoder = [model.upcat_4, model.upcat_3, model.upcat_2, model.upcat_1]
    widths = [
        [c.out_channels for c in block.modules() if isinstance(c, torch.nn.Conv3d)]
        for block in encoder
    ]
    assert widths == [[32, 32], [32, 32], [64, 64], [128, 128], [256, 256]]
    decoder_widths = [
        [c.out_channels for c in block.modules() if isinstance(c, torch.nn.Conv3d)]
        for block in decoder
    ]
    assert decoder_widths == [[128, 128], [64, 64], [32, 32], [32, 32]]
    assert [u.out_channels for u in ups] == [128, 64, 32, 32]
    final = model.final_conv
    assert isinstance(final, torch.nn.Conv3d)
    assert tuple(final.kernel_size) == (1, 1, 1)
    assert final.in_channels == 32 and final.out_channels == 9


def test_unet_output_shape() -> None:
    model = build_unet(get_profile("ci").features).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, 9, 32, 32, 32)
