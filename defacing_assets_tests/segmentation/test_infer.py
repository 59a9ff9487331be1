"""Inference returns a label map on the image's own grid, aligned with the anatomy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import get_profile
from defacing_assets.segmentation.infer import load_network, predict_labels
from defacing_assets.segmentation.model import build_unet
from defacing_assets.segmentation.train import TrainingResult

PROFILE = get_profile("ci")


class BrightIsClassOne(torch.nn.Module):
    """A network with a known answer: class 1 wherever the rescaled image is above 0."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(image.shape[0], 9, *image.shape[2:])
        logits[:, 1] = (image[:, 0] > 0).float() * 10
        return logits


def _oblique_image() -> tuple[Volume, np.ndarray]:
    """An anisotropic, flipped, shifted grid with a 30 mm bright box off-centre."""
    array = np.zeros((48, 40, 20), dtype=np.float32)
    box = np.zeros(array.shape, dtype=bool)
    box[10:30, 20:40, 4:14] = True  # 30 x 30 x 30 mm at 1.5 x 1.5 x 3 mm
    array[box] = 100.0
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 1.5, 0, -12.0], [0, 0, 3.0, -70.0], [0, 0, 0, 1]])
    return Volume(array, affine), box


def test_prediction_lands_on_the_original_grid_where_the_anatomy_is() -> None:
    image, box = _oblique_image()
    labels = predict_labels(BrightIsClassOne(), image, PROFILE)
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, image.affine)
    assert labels.array.dtype == np.uint8
    predicted = labels.array == 1
    dice = 2 * (predicted & box).sum() / (predicted.sum() + box.sum())
    assert dice > 0.8, f"prediction misaligned with the box (Dice {dice:.2f})"
    assert set(np.unique(labels.array)) == {0, 1}


def test_stored_weights_load_into_the_configured_architecture() -> None:
    network = build_unet(PROFILE.features)
    model = TrainingResult(
        network.state_dict(),
        pd.DataFrame(),
        0,
        {"profile": {"features": list(PROFILE.features)}},
    )
    loaded = load_network(model)
    assert not loaded.training
    for name, weights in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weights), name
