"""Inference: a trained U-Net's label map on the subject's original grid.

The image goes through the training pre-processing (resample to the profile's
spacing, rescale to [-1, 1]); the network's softmax is taken whole-volume by
sliding window, its argmax resampled back onto the original grid with nearest
neighbour, as the study compared predictions there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torchio as tio

from defacing_assets.imaging.resample import resample_like
from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import Profile
from defacing_assets.segmentation.data import IMAGE, preprocessing
from defacing_assets.segmentation.model import build_unet
from defacing_assets.segmentation.precision import FLOAT32, autocast
from defacing_assets.segmentation.train import TrainingResult, whole_volume_logits


def load_network(model: TrainingResult, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The stored weights in the architecture its config names, ready for inference."""
    network = build_unet(model.config["profile"]["features"])
    network.load_state_dict(model.model_state)
    return network.to(device).eval()


def predict_labels(
    network: torch.nn.Module,
    image: Volume,
    profile: Profile,
    device: str | torch.device = "cpu",
    precision: str = FLOAT32,
) -> Volume:
    """Label map (0 background, 1..8 OARs) of ``image``, on ``image``'s grid.

    Args:
        network: maps (1, 1, X, Y, Z) images to (1, 9, X, Y, Z) logits.
        image: the (defaced) image to segment, any grid.
        profile: the training profile (spacing and window size).
        precision: what this machine's self-check allows (``choose_precision``).
    """
    device = torch.device(device)
    subject = tio.Subject(
        {
            IMAGE: tio.ScalarImage(
                tensor=torch.from_numpy(np.asarray(image.array, dtype=np.float32)[None].copy()),
                affine=image.affine,
            )
        }
    )
    prepared = preprocessing(profile)(subject)[IMAGE]
    with torch.no_grad(), autocast(device, precision):
        logits = whole_volume_logits(network, prepared.data[None].float().to(device), profile)
        labels = torch.softmax(logits, dim=1).argmax(dim=1)[0]
    on_training_grid = Volume(
        labels.cpu().numpy().astype(np.uint8), np.asarray(prepared.affine, dtype=float)
    )
    return resample_like(on_training_grid, image, "nearest")


@dataclass
class CohortPredictions:
    """Label maps of every test subject of every fold, each on its original grid."""

    labels: dict[str, Volume] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    """Fold whose model predicted each subject (the subject's test fold)."""
    model_failures: dict[str, str] = field(default_factory=dict)
    """Test subjects left unpredicted because their fold's model failed its quality gate,
    with the reason (they are in ``folds`` too, not in ``labels``)."""
