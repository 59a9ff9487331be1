"""Study profiles: one code path, different sizes.

A profile changes voxel spacing, cohort size and (in later stages) epochs,
never the algorithm. ``paper`` is the published acquisition; ``demo`` runs the
whole study on a 2-core machine; ``ci`` is tiny, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    spacing: tuple[float, float, float]
    """Acquisition voxel size of the synthetic cohort in mm (x, y, z)."""
    n_subjects: int
    """Default synthetic cohort size."""


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper", (0.5, 0.5, 2.0), 55),
    "demo": Profile("demo", (1.5, 1.5, 3.0), 15),
    "ci": Profile("ci", (3.0, 3.0, 4.0), 4),
}


def get_profile(name: str) -> Profile:
    """Look up a profile, naming the valid choices when the name is wrong."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
