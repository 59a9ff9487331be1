"""``deepdefacer``: DeepDefacer 2.1.2's 3-D U-Net, run as its own command-line tool runs it.

DeepDefacer (Khazane et al. 2019) ships one Keras model (``model.hdf5`` inside
the ``deepdefacer`` package) that predicts, for a whole head squeezed onto a
160x160x160 grid, the probability that a voxel is kept. Its tool
(``deepdefacer.defacer.deface_3D_MRI``) does, and this reproduces:

1. ``resample_image``: the voxel array, as stored and without reorientation,
   is stretched onto 160x160x160 by SimpleITK linear interpolation in voxel
   space (the image direction and spacing cancel out of its transforms), in the
   input's own pixel type;
2. min-max scaling of that grid to [0, 1] (``+ 1e-7`` in the denominator),
   channels-first input of shape (1, 1, 160, 160, 160);
3. ``predict``, then threshold: probability >= 0.5 is 1 = keep (the tool
   multiplies the image by this mask);
4. the same ``resample_image`` back to the scan's shape.

Step 4 differs in one detail: the tool resamples the 0/1 mask *linearly* and
multiplies the image by the fractional result; here the mask is resampled by
nearest neighbour so that every voxel is either kept or zeroed, which the
Defacer contract needs. ``resample_image`` relied on SimpleITK 1.x's
``Transform.AddTransform`` (gone in 2.x); :func:`voxel_space_resample` builds
the same transform as a ``CompositeTransform``. Its centring is half a voxel
off (``n/2`` where ``(n - 1)/2`` would be centred), which the tool's output
shows and this keeps: on an axis of at most 80 voxels the first slice maps
outside the 160^3 grid on the way back and is always removed (the demo
profile's 71-77 axial slices lose the lowest one).

The package itself cannot be installed with its dependencies any more (it
requires the deprecated ``sklearn`` package, which refuses to install), so the
model file comes from ``pip install --no-deps deepdefacer==2.1.2``, from the
environment variable :data:`MODEL_ENV`, or from the ``model_path`` argument.
The network runs in TensorFlow with tf-keras (Keras 2, which reads the 2019
HDF5 file); TensorFlow is imported only when the method is used, kept off any
GPU and quiet, and the model is loaded once per process and path.

DeepDefacer was trained on brain T1 MR; it is run on any modality as given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from defacing_assets.defacers.base import Defacer, DefacingFailed, MethodOutput
from defacing_assets.imaging.volume import Volume

MODEL_SHAPE = (160, 160, 160)
"""deepdefacer's ``optimal_dims``: the grid every scan is squeezed onto."""
THRESHOLD = 0.5
"""Probability at or above which the model keeps a voxel."""
MODEL_ENV = "DEFACING_ASSETS_DEEPDEFACER_MODEL"
"""Path of ``model.hdf5`` when the ``deepdefacer`` package is not installed."""
INSTALL_HINT = "pip install --no-deps deepdefacer==2.1.2"
TF_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
"""Set (unless already set) before TensorFlow is imported; they affect only TensorFlow."""

_PREDICT_LOCK = threading.Lock()


def dice_coefficient(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """deepdefacer's training metric, needed by name to deserialise the model."""
    import tensorflow as tf

    true_flat = tf.reshape(y_true, [-1])
    pred_flat = tf.reshape(y_pred, [-1])
    intersection = tf.reduce_sum(true_flat * pred_flat)
    return (2.0 * intersection + smooth) / (
        tf.reduce_sum(true_flat) + tf.reduce_sum(pred_flat) + smooth
    )


def default_model_path() -> Path:
    """``model.hdf5`` from :data:`MODEL_ENV` or the installed ``deepdefacer`` package.

    Raises FileNotFoundError saying how to get it. The package is located, not
    imported (its modules import standalone Keras and exit on failure).
    """
    configured = os.environ.get(MODEL_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"DeepDefacer model not found: {MODEL_ENV}={configured}")
        return path
    spec = importlib.util.find_spec("deepdefacer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"DeepDefacer model not found: the deepdefacer package is not installed "
            f"({INSTALL_HINT}, or set {MODEL_ENV})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"DeepDefacer model not found: {path} does not exist")
    return path


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines ignore log levels."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tf_keras() -> tuple[Any, Any]:
    """``tensorflow`` and ``tf_keras``, imported quietly, with TensorFlow kept off GPUs.

    Raises ImportError when either cannot be imported.
    """
    for key, value in TF_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    with _stderr_silenced():
        import tensorflow as tf
        import tf_keras
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised by an earlier TensorFlow user
        pass
    return tf, tf_keras


@lru_cache(maxsize=4)
def load_model(path: str) -> Any:
    """The Keras model in ``path``, loaded once per process."""
    _, tf_keras = import_tf_keras()
    return tf_keras.models.load_model(
        path, custom_objects={"dice_coefficient": dice_coefficient}, compile=False
    )


@lru_cache(maxsize=4)
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _distribution_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def voxel_space_resample(array: np.ndarray, shape: tuple[int, ...], nearest: bool) -> np.ndarray:
    """deepdefacer's ``resample_image``: stretch ``array`` onto ``shape``, axis by axis.

    Output voxel ``m`` of an axis samples input index ``n/2 + (m - M/2) (n - 1)/(M - 1)``
    (sizes n in, M out), linearly (or by nearest neighbour) in the input's pixel
    type, 0 beyond half a voxel outside. Forward and backward maps are inverses.
    """
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if min(array.shape) < 2 or min(shape) < 2:
        raise DefacingFailed(f"deepdefacer cannot resample shape {array.shape} to {shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    size = np.array(image.GetSize(), dtype=float)
    physical_size = (size - 1) * np.array(image.GetSpacing())
    reference_size = [int(n) for n in shape]
    reference = sitk.Image(reference_size, image.GetPixelIDValue())
    reference.SetOrigin((0.0, 0.0, 0.0))
    reference.SetSpacing(
        [float(p / (n - 1)) for p, n in zip(physical_size, reference_size, strict=True)]
    )
    reference.SetDirection(np.identity(3).ravel().tolist())
    reference_centre = np.array(
        reference.TransformContinuousIndexToPhysicalPoint((np.array(reference_size) / 2.0).tolist())
    )
    to_image = sitk.AffineTransform(3)
    to_image.SetMatrix(image.GetDirection())
    to_image.SetTranslation(image.GetOrigin())
    image_centre = image.TransformContinuousIndexToPhysicalPoint((size / 2.0).tolist())
    centring = sitk.TranslationTransform(3)
    centring.SetOffset(
        (np.array(to_image.GetInverse().TransformPoint(image_centre)) - reference_centre).tolist()
    )
    # SimpleITK 1.x Transform(to_image).AddTransform(centring): centring is applied first.
    transform = sitk.CompositeTransform([to_image, centring])
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    resampled = sitk.Resample(image, reference, transform, interpolator, 0.0)
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


def preprocess(array: np.ndarray) -> np.ndarray:
    """deepdefacer's ``pre_process_image``: (1, 1, 160, 160, 160) float32 in [0, 1]."""
    resampled = voxel_space_resample(array, MODEL_SHAPE, nearest=False).astype(np.float32)
    low, high = np.min(resampled), np.max(resampled)
    scaled = (resampled - low) / (high - low + 1e-7)
    return scaled[np.newaxis, np.newaxis].astype(np.float32)


def keep_probability(model: Any, array: np.ndarray) -> np.ndarray:
    """The model's keep probability on the 160^3 grid for a scan's voxel array."""
    with _PREDICT_LOCK:
        prediction = model.predict(preprocess(array), batch_size=1, verbose=0)
    return np.squeeze(np.asarray(prediction))


class DeepDefacer(Defacer):
    name = "deepdefacer"
    tool = "deepdefacer"

    def __init__(self, model_path: str | Path | None = None) -> None:
        self._model_path = None if model_path is None else Path(model_path)

    def model_path(self) -> Path:
        if self._model_path is None:
            return default_model_path()
        if not self._model_path.is_file():
            raise FileNotFoundError(f"DeepDefacer model not found: {self._model_path}")
        return self._model_path

    def version(self) -> str:
        try:
            path = self.model_path()
            model = f"{path.name} sha256:{_file_digest(str(path))}"
        except (FileNotFoundError, OSError):
            model = "model missing"
        return (
            f"deepdefacer {_distribution_version('deepdefacer')} ({model}), "
            f"TensorFlow {_distribution_version('tensorflow', 'tensorflow-cpu')}, "
            f"tf-keras {_distribution_version('tf-keras')}"
        )

    def available(self) -> tuple[bool, str]:
        try:
            path = self.model_path()
        except FileNotFoundError as error:
            return False, str(error)
        try:
            load_model(str(path))
        except ImportError as error:
            return False, f"TensorFlow with tf-keras is needed to run DeepDefacer: {error}"
        except Exception as error:  # h5py/Keras raise many types for an unreadable model
            return False, f"cannot load the DeepDefacer model {path}: {error}"
        return True, ""

    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        path = self.model_path()
        probability = keep_probability(load_model(str(path)), volume.array)
        if probability.shape != MODEL_SHAPE or not np.all(np.isfinite(probability)):
            raise DefacingFailed(f"model output unusable: shape {probability.shape}")
        model_mask = (probability >= THRESHOLD).astype(np.uint8)
        if not model_mask.any():
            raise DefacingFailed("the model kept no voxel")
        kept = voxel_space_resample(model_mask, volume.shape, nearest=True) > 0
        return MethodOutput(
            kept_mask=kept,
            command=f"deepdefacer {path.name}: voxel-space resample to 160^3, min-max, "
            f"keep probability >= {THRESHOLD}, nearest-neighbour back to {volume.shape}",
        )
