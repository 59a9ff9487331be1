"""Volumes: the one image type, NIfTI IO, validation and resampling."""

from defacing_assets.imaging.errors import InvalidScanError
from defacing_assets.imaging.io import load_volume, save_volume, volume_from_bytes, volume_to_bytes
from defacing_assets.imaging.resample import resample_like, resample_to_spacing
from defacing_assets.imaging.validation import image_problems, label_problems
from defacing_assets.imaging.volume import Volume

__all__ = [
    "InvalidScanError",
    "Volume",
    "image_problems",
    "label_problems",
    "load_volume",
    "resample_like",
    "resample_to_spacing",
    "save_volume",
    "volume_from_bytes",
    "volume_to_bytes",
]
