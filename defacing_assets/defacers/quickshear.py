"""``quickshear``: the quickshear package's own shear, fitted to a deepbet brain mask.

Quickshear (Schimke & Hale 2011) needs a brain mask; it takes the sagittal
profile of that mask, the first edge of the profile's lower convex hull
(starting at the most anterior brain voxel) and zeroes everything anterior and
inferior of that line moved ``buffer`` voxels down (along the superior axis,
so the buffer in mm is ``buffer`` times the slice thickness). The mask comes
from deepbet, a CNN whose two TorchScript models ship inside its wheel, so this
runs offline on CPU with no files written.

The kept mask is read off quickshear itself: shearing an all-ones image with
the same mask and affine leaves 1 exactly where quickshear keeps the voxel, so
zero-valued voxels cannot blur which voxels it removed.

Both tools assume a whole-head T1: on head-and-neck fields of view that stop
near the skull base, deepbet can grow the "brain" down the neck and the shear
plane moves with it; that is the tool's behaviour and is kept.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from defacing_assets.defacers.base import Defacer, DefacingFailed, MethodOutput
from defacing_assets.imaging.volume import Volume

DEFAULT_BUFFER_VOXELS = 10
"""quickshear's own default ``buff`` (voxels between the brain and the shear plane)."""
DEEPBET_MODELS = ("model.pt", "bbox_model.pt")
"""The TorchScript files deepbet loads from ``deepbet.utils.DATA_PATH/models``."""


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


class Quickshear(Defacer):
    name = "quickshear"
    tool = "quickshear"

    def __init__(
        self,
        buffer: float = DEFAULT_BUFFER_VOXELS,
        threshold: float = 0.5,
        use_gpu: bool = False,
    ) -> None:
        """``threshold`` is deepbet's probability cut; ``use_gpu`` lets deepbet pick CUDA."""
        self.buffer = buffer
        self.threshold = threshold
        self.use_gpu = use_gpu
        self._extractor: Any = None

    def version(self) -> str:
        return f"quickshear {_package_version('quickshear')}, deepbet {_package_version('deepbet')}"

    def available(self) -> tuple[bool, str]:
        try:
            import quickshear  # noqa: F401
        except ImportError as error:
            return False, f"cannot import quickshear: {error}"
        try:
            from deepbet.utils import DATA_PATH
        except ImportError as error:
            return False, f"cannot import deepbet: {error}"
        missing = [m for m in DEEPBET_MODELS if not (Path(DATA_PATH) / "models" / m).is_file()]
        if missing:
            return False, f"deepbet model weights missing from {DATA_PATH}/models: {missing}"
        return True, ""

    def _brain_extraction(self) -> Any:
        """deepbet's extractor, loaded once per instance (two ~8.7 MB TorchScript models)."""
        if self._extractor is None:
            from deepbet import BrainExtraction

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated")
                self._extractor = BrainExtraction(no_gpu=not self.use_gpu)
        return self._extractor

    def brain_mask(self, image: nib.Nifti1Image) -> np.ndarray:
        """deepbet's brain mask on the image grid; DefacingFailed when it finds none."""
        try:
            _, mask, _ = self._brain_extraction().run(image, threshold=self.threshold)
        except (ValueError, AssertionError) as error:
            # deepbet takes argmax of an empty component list (or asserts) on an empty mask.
            raise DefacingFailed(f"deepbet found no brain ({error})") from None
        brain = np.asarray(mask.dataobj).astype(bool)
        if not brain.any():
            raise DefacingFailed("deepbet found no brain: empty brain mask")
        return brain

    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        from quickshear import quickshear

        image = nib.Nifti1Image(volume.array, volume.affine)
        brain = self.brain_mask(image)
        mask_image = nib.Nifti1Image(brain.astype(np.uint8), volume.affine)
        ones = nib.Nifti1Image(np.ones(volume.shape, dtype=np.uint8), volume.affine)
        try:
            with warnings.catch_warnings():
                # quickshear 1.2 calls np.cross on 2-D vectors (deprecated in NumPy 2).
                warnings.filterwarnings("ignore", message=".*2-dimensional vectors.*")
                with np.errstate(divide="raise", invalid="raise"):
                    sheared = quickshear(ones, mask_image, self.buffer)
        except (ValueError, IndexError, FloatingPointError) as error:
            raise DefacingFailed(
                f"quickshear could not place a shear plane on deepbet's mask "
                f"({brain.sum()} voxels): {type(error).__name__}: {error}"
            ) from None
        kept = np.asarray(sheared.dataobj) == 1
        return MethodOutput(
            kept_mask=kept,
            command=f"deepbet BrainExtraction(threshold={self.threshold}, "
            f"{'gpu' if self.use_gpu else 'cpu'}) -> quickshear.quickshear(buff={self.buffer})",
        )
