"""TorchIO subjects for training: pre-processing once, augmentation every draw.

Pre-processing follows the paper: linear resampling of the (defaced) image to
the profile's isotropic training spacing (nearest neighbour for labels), then
intensities rescaled to [-1, 1]. It is deterministic and costly, so it is
computed once per subject/method/profile and cached in memory (and on disk when
a cache folder is given); augmentation is random and runs on every draw.
Cache entries are keyed by a digest of the input arrays too, so a re-defaced
or re-annotated scan never reuses a stale entry.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchio as tio
from upath import UPath

from defacing_assets.imaging.atomic import atomic_write_bytes
from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import Profile

LabelPolicy = Literal["original", "kept"]
"""``original``: the full annotation, also where defacing removed tissue;
``kept``: the annotation restricted to voxels the defacer kept."""

IMAGE = "image"
LABEL = "label"
DIGEST = "digest"
"""Subject field: :func:`input_digest` of what the subject was made from."""

_MEMORY_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]] = {}


class PadToWindow(tio.SpatialTransform):
    """Pad each axis up to the training window with the image's minimum (air; label 0): a
    short field of view (a scan ending at the mouth, a low neck) is still a valid scan."""

    def __init__(self, window: tuple[int, int, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.window = window
        self.args_names = ["window"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        missing = np.maximum(np.array(self.window) - np.array(subject.spatial_shape), 0)
        if not missing.any():
            return subject
        padding = [int(side) for n in missing for side in (n // 2, n - n // 2)]
        return tio.Pad(padding, padding_mode="minimum")(subject)


def preprocessing(profile: Profile) -> tio.Compose:
    """Resample to isotropic training spacing (linear/nearest), rescale to [-1, 1], pad
    up to the training window."""
    return tio.Compose(
        [
            tio.Resample(
                profile.training_spacing,
                image_interpolation="linear",
                label_interpolation="nearest",
            ),
            tio.RescaleIntensity(out_min_max=(-1, 1)),
            PadToWindow(tuple(profile.patch_size)),
        ]
    )


def augmentation() -> tio.Compose:
    """The paper's training augmentation, each transform drawn independently.

    "Flips along inferior-superior and anterior-posterior (p 0.5)" is read as
    each of the two axes flipped independently with probability 0.5
    (``RandomFlip(flip_probability=0.5)``, applied always), so a draw is
    unflipped, IS-flipped, AP-flipped or both, each with probability 1/4.
    Axes are named anatomically, so TorchIO finds them from the affine
    whatever the array order.
    """
    return tio.Compose(
        [
            tio.RandomElasticDeformation(p=0.1),
            tio.RandomFlip(axes=("AP", "IS"), flip_probability=0.5),
            tio.RandomAffine(scales=0, degrees=10, translation=0, p=0.5),
            tio.RandomBiasField(p=0.5),
            tio.RandomGamma(p=0.5),
        ]
    )


def _raw_subject(image: Volume, labels: Volume, kept_mask: Volume | None, policy: LabelPolicy):
    label_array = np.asarray(labels.array).astype(np.int64)
    if policy == "kept":
        if kept_mask is None:
            raise ValueError("label_policy 'kept' needs a kept_mask")
        label_array = np.where(np.asarray(kept_mask.array) > 0, label_array, 0)
    elif policy != "original":
        raise ValueError(f"unknown label_policy {policy!r}; use 'original' or 'kept'")
    return tio.Subject(
        {
            IMAGE: tio.ScalarImage(
                tensor=torch.from_numpy(np.asarray(image.array, dtype=np.float32)[None].copy()),
                affine=image.affine,
            ),
            LABEL: tio.LabelMap(tensor=torch.from_numpy(label_array[None]), affine=labels.affine),
        }
    )


def input_digest(*volumes: Volume | None) -> str:
    """Short content hash of the arrays and affines (``None`` entries count as absent)."""
    digest = hashlib.blake2b(digest_size=10)
    for volume in volumes:
        if volume is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(volume.array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
        digest.update(np.asarray(volume.affine, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _to_subject(
    image: torch.Tensor, label: torch.Tensor, affine: np.ndarray, name: str, digest: str
):
    return tio.Subject(
        {
            IMAGE: tio.ScalarImage(tensor=image.clone(), affine=affine),
            LABEL: tio.LabelMap(tensor=label.clone(), affine=affine),
            "name": name,
            DIGEST: digest,
        }
    )


def make_subject(
    image: Volume,
    labels: Volume,
    kept_mask: Volume | None,
    profile: Profile,
    label_policy: LabelPolicy = "original",
    key: str | None = None,
    cache_dir: str | Path | UPath | None = None,
) -> tio.Subject:
    """A pre-processed TorchIO subject (image, label) ready for training or validation.

    Args:
        image: the (defaced) image.
        labels: the original annotation on the image grid.
        kept_mask: voxels the defacer kept (needed for ``label_policy="kept"``).
        profile: gives the training spacing.
        label_policy: see :data:`LabelPolicy`.
        key: cache key, e.g. ``"{subject}/{method}"``; the input digest, profile
            and policy are appended. ``None`` disables caching.
        cache_dir: optional folder for an on-disk cache shared between processes.
    """
    kept_input = kept_mask if label_policy == "kept" else None
    digest = input_digest(image, labels, kept_input)
    full_key = None if key is None else f"{key}/{digest}/{profile.name}/{label_policy}"
    name = key or "subject"
    if full_key is not None and full_key in _MEMORY_CACHE:
        return _to_subject(*_MEMORY_CACHE[full_key], name, digest)
    cache_file = None
    if full_key is not None and cache_dir is not None:
        cache_file = UPath(cache_dir) / (full_key.replace("/", "__") + ".pt")
        if cache_file.exists():
            stored = torch.load(io.BytesIO(cache_file.read_bytes()), weights_only=False)
            entry = (stored["image"], stored["label"], np.asarray(stored["affine"]))
            _MEMORY_CACHE[full_key] = entry
            return _to_subject(*entry, name, digest)
    subject = preprocessing(profile)(_raw_subject(image, labels, kept_mask, label_policy))
    entry = (
        subject[IMAGE].data.float().contiguous(),
        subject[LABEL].data.to(torch.int64).contiguous(),
        np.asarray(subject[IMAGE].affine, dtype=float),
    )
    if full_key is not None:
        _MEMORY_CACHE[full_key] = entry
    if cache_file is not None:
        buffer = io.BytesIO()
        torch.save({"image": entry[0], "label": entry[1], "affine": entry[2]}, buffer)
        atomic_write_bytes(cache_file, buffer.getvalue())
    return _to_subject(*entry, name, digest)


def clear_memory_cache() -> None:
    """Forget the in-process cache (tests, or a process switching cohorts)."""
    _MEMORY_CACHE.clear()
