"""TorchIO subjects for training: pre-processing once, augmentation every draw.

Pre-processing follows the paper: linear resampling of the (defaced) image to
the profile's isotropic training spacing (nearest neighbour for labels), then
intensities rescaled to [-1, 1]. It is deterministic and costly, so it is
computed once per subject/method/profile and cached in memory (and on disk when
a cache folder is given); augmentation is random and runs on every draw.
Cache entries are keyed by a digest of the input arrays too, so a re-defaced
or re-annotated scan never reuses a stale entry. An on-disk entry holds only tensors,
has its sha256 beside it (``<entry>.sha256``) and is loaded with ``weights_only=True``:
one whose digest is missing or does not match, or that does not load, is moved aside
(logged with the reason) and recomputed, never unpickled into running code.
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
from defacing_assets.segmentation.safe_load import load_problem, load_tensors, set_aside

LabelPolicy = Literal["original", "kept"]
"""``original``: the full annotation, also where defacing removed tissue;
``kept``: the annotation restricted to voxels the defacer kept."""

IMAGE = "image"
LABEL = "label"
DIGEST = "digest"
"""Subject field: :func:`input_digest` of what the subject was made from."""

_MEMORY_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]] = {}

DIGEST_SUFFIX = ".sha256"
"""A cache entry's sha256 (hex) is stored beside it under ``<entry name><DIGEST_SUFFIX>``."""


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


def _digest_file(cache_file: UPath) -> UPath:
    return cache_file.with_name(cache_file.name + DIGEST_SUFFIX)


def _entry_problem(stored: object) -> str | None:
    if not isinstance(stored, dict):
        return "not a dict of tensors"
    wrong = [k for k in ("image", "label", "affine") if not isinstance(stored.get(k), torch.Tensor)]
    return f"{', '.join(wrong)} missing or not a tensor" if wrong else None


def read_cache_entry(cache_file: UPath) -> tuple[torch.Tensor, torch.Tensor, np.ndarray] | None:
    """The cached (image, label, affine) at ``cache_file``, or ``None`` when absent or
    untrustworthy. The bytes must match the sha256 stored beside them before anything is
    unpickled, and then only tensors load; a bad entry is moved aside so it is recomputed."""
    if not cache_file.exists():
        return None
    digest_file = _digest_file(cache_file)
    try:
        data = cache_file.read_bytes()
        expected = digest_file.read_text().strip() if digest_file.exists() else None
    except FileNotFoundError:  # replaced or moved aside by another process meanwhile
        return None
    if expected is None:
        problem = f"no {DIGEST_SUFFIX} beside it"
    elif hashlib.sha256(data).hexdigest() != expected:
        problem = f"sha256 does not match {digest_file.name}"
    else:
        try:
            stored = load_tensors(data)
            problem = _entry_problem(stored)
        except Exception as error:  # refused global, truncated or damaged file
            problem = load_problem(error)
        if problem is None:
            return (stored["image"], stored["label"], stored["affine"].numpy())
    set_aside(cache_file, problem, "pre-processing cache entry")
    digest_file.unlink(missing_ok=True)
    return None


def write_cache_entry(
    cache_file: UPath, entry: tuple[torch.Tensor, torch.Tensor, np.ndarray]
) -> None:
    """Store an entry as tensors only, with its sha256 beside it. The digest goes first: a
    process reading the entry while another writes it (folds of one method share entries)
    never finds it without its digest, and a kill in between only leaves a digest whose
    entry is missing, so the entry is recomputed."""
    image, label, affine = entry
    buffer = io.BytesIO()
    torch.save(
        {"image": image, "label": label, "affine": torch.from_numpy(np.asarray(affine, float))},
        buffer,
    )
    data = buffer.getvalue()
    atomic_write_bytes(_digest_file(cache_file), hashlib.sha256(data).hexdigest().encode())
    atomic_write_bytes(cache_file, data)


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
        entry = read_cache_entry(cache_file)
        if entry is not None:
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
        write_cache_entry(cache_file, entry)
    return _to_subject(*entry, name, digest)


def clear_memory_cache() -> None:
    """Forget the in-process cache (tests, or a process switching cohorts)."""
    _MEMORY_CACHE.clear()
