"""The Defacer contract: a Volume in, a typed DefacingResult out.

The base class does timing, the kept-mask checks and the failure policy once;
a method only computes which voxels it keeps (and, for refacing methods, what
replaces the others). ``kept_mask`` is 1 where the voxel is unchanged, for
every tool.
"""

from __future__ import annotations

import copy
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from defacing_assets.imaging.volume import Volume

Status = Literal["ok", "failed", "unavailable"]


@dataclass(eq=False)
class DefacingResult:
    image: Volume | None
    kept_mask: Volume | None
    status: Status
    reason: str
    tool: str
    version: str
    command: str
    seconds: float
    details: dict[str, float] = field(default_factory=dict)
    """Method-specific measurements (for example the refaced shell's volume in ml)."""

    def record(self) -> dict:
        """Everything but the volumes, as JSON-ready values."""
        return {
            "status": self.status,
            "reason": self.reason,
            "tool": self.tool,
            "version": self.version,
            "command": self.command,
            "seconds": round(self.seconds, 3),
            "details": self.details,
        }

    @property
    def changed_fraction(self) -> float:
        if self.kept_mask is None:
            return float("nan")
        return float(1.0 - np.mean(self.kept_mask.array > 0))


class DefacingFailed(RuntimeError):
    """Raised inside a method when the tool ran but produced nothing usable."""


@dataclass(frozen=True)
class MethodOutput:
    kept_mask: np.ndarray
    """bool, True where the voxel is kept unchanged."""
    replacement: np.ndarray | None = None
    """Values for the removed voxels (None: zero them)."""
    command: str = ""
    details: dict[str, float] = field(default_factory=dict)


class Defacer(ABC):
    """One defacing method. Subclasses implement :meth:`compute`."""

    name: str = ""
    tool: str = ""
    changes_voxels: bool = True
    """False only for the identity; any other method that changes nothing is warned about."""
    uses_labels: bool = False
    """True for methods that protect the OARs: :meth:`compute` then also gets ``labels``."""
    seed: int = 0
    """Seeds every random choice the method makes (the study's seed; see :meth:`seeded`)."""

    def seeded(self, seed: int) -> Defacer:
        """This method with its random choices drawn from ``seed``: the same scan and seed
        give the same bytes. A copy, so the registry's instance stays as it was."""
        clone = copy.copy(self)
        clone.seed = seed
        return clone

    def version(self) -> str:
        return "unknown"

    def available(self) -> tuple[bool, str]:
        """Whether it can run on this machine and, if not, why."""
        return True, ""

    @abstractmethod
    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        """Which voxels to keep; raise DefacingFailed when the tool fails.

        A method with :attr:`uses_labels` takes a third argument, ``labels``
        (the OAR label map on the image's grid, or None).
        """

    def deface(
        self, volume: Volume, modality: str = "MR", labels: Volume | None = None
    ) -> DefacingResult:
        """Run the method; ``labels`` reach only methods that use them."""
        started = time.perf_counter()
        ready, why = self.available()
        if not ready:
            return DefacingResult(
                None, None, "unavailable", why, self.tool, self.version(), "", 0.0
            )
        try:
            output = (
                self.compute(volume, modality, labels)
                if self.uses_labels
                else self.compute(volume, modality)
            )
        except DefacingFailed as error:
            return DefacingResult(
                None,
                None,
                "failed",
                str(error),
                self.tool,
                self.version(),
                "",
                time.perf_counter() - started,
            )
        kept = np.asarray(output.kept_mask, dtype=bool)
        if kept.shape != volume.shape:
            raise ValueError(
                f"{self.name}: kept mask shape {kept.shape} differs from the image {volume.shape}"
            )
        if kept.all() and self.changes_voxels:
            warnings.warn(f"{self.name} changed no voxel", stacklevel=2)
        background = 0 if output.replacement is None else output.replacement
        defaced = np.where(kept, volume.array, background).astype(volume.array.dtype)
        return DefacingResult(
            image=volume.with_array(defaced),
            kept_mask=volume.with_array(kept.astype(np.uint8)),
            status="ok",
            reason="",
            tool=self.tool,
            version=self.version(),
            command=output.command,
            seconds=time.perf_counter() - started,
            details=dict(output.details),
        )
