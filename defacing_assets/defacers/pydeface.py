"""``pydeface``: pydeface's algorithm with its own template and face mask, in SimpleITK.

pydeface registers its average head (``mean_reg2mean.nii.gz``) to the scan
with FLIRT (12-parameter affine, mutual information), carries its face mask
(``facemask.nii.gz``, 1 = keep) over with that transform and zeroes what the
mask does not keep. FLIRT pads with zeros, so every scan voxel outside the
template's field of view also gets mask 0 and is removed: on head-and-neck
scans that is the whole lower neck, which is why pydeface erased the level III
nodes of 45 of 55 patients in the study and kept only the brain on CT. This
reproduces that by default (``keep_outside_template=True`` turns it off).

Engines: ``simpleitk`` (default where FSL is absent) runs the algorithm above;
``fsl`` runs the real ``pydeface`` command (which calls FLIRT), chosen
automatically when ``FSLDIR`` is set and ``flirt`` is on the PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from importlib import metadata
from typing import Literal

import numpy as np
import SimpleITK as sitk

from defacing_assets.cohort.phantom import template_path
from defacing_assets.defacers.base import Defacer, DefacingFailed, MethodOutput
from defacing_assets.defacers.external import CommandLineDefacer, ToolSpec
from defacing_assets.imaging.io import load_volume
from defacing_assets.imaging.resample import to_sitk
from defacing_assets.imaging.volume import Volume

REGISTRATION_THREADS = 1
"""ITK's Mattes metric adds up per-thread partial sums in no fixed order: at 2 threads, four
registrations of one scan with one seed gave parameters up to 5e-5 apart (enough to flip
voxels on the mask's edge); at 1 thread they were identical."""

SCALE_LIMITS = (0.6, 1.6)
"""A registration whose affine scales outside these bounds has diverged."""


def registration_seed(seed: int) -> int:
    """The study's seed as a SimpleITK sampling seed: SimpleITK reads 0 as "seed from the
    clock", so every study seed (0 included) maps to a fixed value in 1 .. 2**32 - 1."""
    return seed % (2**32 - 1) + 1


def register_template(scan: sitk.Image, template: sitk.Image, seed: int) -> sitk.Transform:
    """Affine (12 parameters) template -> scan by Mattes mutual information, coarse to fine.

    The metric samples 5% of the voxels at random, drawn from ``seed`` (the study's), so
    the same scan always gives the same transform. Returns the transform mapping scan
    (fixed) points to template (moving) points, as ``sitk.Resample`` expects.
    """
    with _itk_threads(REGISTRATION_THREADS):
        return _register(scan, template, seed)


@contextlib.contextmanager
def _itk_threads(count: int) -> Iterator[None]:
    """ITK's default thread count set to ``count`` for the block (process-wide state)."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _register(scan: sitk.Image, template: sitk.Image, seed: int) -> sitk.Transform:
    fixed = sitk.Cast(scan, sitk.sitkFloat32)
    moving = sitk.Cast(template, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.05, registration_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([3.0, 1.5, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def check_transform(transform: sitk.CompositeTransform) -> None:
    """Refuse a registration that diverged (non-finite or implausible scaling)."""
    affine = sitk.AffineTransform(transform.GetNthTransform(0))
    singular = np.linalg.svd(np.array(affine.GetMatrix()).reshape(3, 3), compute_uv=False)
    low, high = SCALE_LIMITS
    if not np.all(np.isfinite(singular)) or singular.min() < low or singular.max() > high:
        scales = np.round(singular, 3).tolist()
        raise DefacingFailed(f"registration diverged: affine scales {scales} outside {low}..{high}")


PYDEFACE_CLI = ToolSpec(
    name="pydeface",
    command="pydeface --outfile {output} --force {input}",
    outputs=("{output}",),
    environment={"FSLOUTPUTTYPE": "NIFTI_GZ"},
    requires_programs=("flirt",),
    description="the real pydeface command (FSL FLIRT)",
)


def fsl_available() -> bool:
    return bool(os.environ.get("FSLDIR")) and shutil.which("flirt") is not None


class Pydeface(Defacer):
    name = "pydeface"
    tool = "pydeface"

    def __init__(
        self,
        keep_outside_template: bool = False,
        seed: int = 0,
        engine: Literal["auto", "simpleitk", "fsl"] = "auto",
    ) -> None:
        if engine not in ("auto", "simpleitk", "fsl"):
            raise ValueError(f"engine must be 'auto', 'simpleitk' or 'fsl', got {engine!r}")
        self.keep_outside_template = keep_outside_template
        self.seed = seed
        self.engine = engine

    def _fsl(self) -> CommandLineDefacer | None:
        """The real command when asked for, or when FSL is installed and not ruled out."""
        if self.engine == "fsl" or (self.engine == "auto" and fsl_available()):
            return CommandLineDefacer(PYDEFACE_CLI)
        return None

    def available(self) -> tuple[bool, str]:
        fsl = self._fsl()
        return fsl.available() if fsl is not None else (True, "")

    def version(self) -> str:
        fsl = self._fsl()
        if fsl is not None:
            return f"pydeface CLI {fsl.version()}"
        return (
            f"pydeface {metadata.version('pydeface')} template, "
            f"SimpleITK {sitk.Version.VersionString()}"
        )

    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        fsl = self._fsl()
        if fsl is not None:
            return fsl.compute(volume, modality)
        scan = to_sitk(volume.with_array(volume.array.astype(np.float32)))
        template = to_sitk(load_volume(str(template_path())))
        face_mask = to_sitk(load_volume(str(template_path("facemask.nii.gz"))))
        try:
            transform = register_template(scan, template, self.seed)
        except RuntimeError as error:
            raise DefacingFailed(f"registration failed: {error}") from None
        check_transform(transform)
        outside = 1.0 if self.keep_outside_template else 0.0
        carried = sitk.Resample(
            sitk.Cast(face_mask, sitk.sitkFloat32), scan, transform, sitk.sitkLinear, outside
        )
        kept = sitk.GetArrayFromImage(carried).transpose(2, 1, 0) > 0.5
        return MethodOutput(
            kept_mask=kept,
            command=f"SimpleITK affine MI registration of pydeface template; zero padding "
            f"{'off' if self.keep_outside_template else 'on'}",
        )
