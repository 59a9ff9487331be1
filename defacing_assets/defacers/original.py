"""``original``: the identity method, so "trained on original" needs no special case."""

from __future__ import annotations

import numpy as np

from defacing_assets import __version__
from defacing_assets.defacers.base import Defacer, MethodOutput
from defacing_assets.imaging.volume import Volume


class Original(Defacer):
    name = "original"
    tool = "defacing_assets"
    changes_voxels = False

    def version(self) -> str:
        return __version__

    def compute(self, volume: Volume, modality: str) -> MethodOutput:
        return MethodOutput(np.ones(volume.shape, dtype=bool), command="identity")
