"""The one registry of defacers: name -> Defacer.

Sources are merged by name, later ones overriding earlier ones: built-ins,
then Python entry points in the group ``defacing_assets.defacers`` (each
loading a Defacer subclass or instance). Command-line tools wrapped by
``defacers.yaml`` stanzas are the next source to be added (issue 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from defacing_assets.defacers.base import Defacer
from defacing_assets.defacers.original import Original
from defacing_assets.defacers.pydeface import Pydeface

ENTRY_POINT_GROUP = "defacing_assets.defacers"


@dataclass(frozen=True)
class RegisteredDefacer:
    defacer: Defacer
    source: str
    """``builtin`` or ``entry point <module:attr>``."""


def builtin_defacers() -> dict[str, Defacer]:
    return {method.name: method for method in (Original(), Pydeface())}


def _entry_point_defacers() -> dict[str, RegisteredDefacer]:
    found = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = point.load()
        defacer = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(defacer, Defacer):
            raise TypeError(f"entry point {point.value!r} ({ENTRY_POINT_GROUP}) is not a Defacer")
        found[point.name] = RegisteredDefacer(defacer, f"entry point {point.value}")
    return found


def registry() -> dict[str, RegisteredDefacer]:
    """Every known defacer by name (available or not)."""
    merged = {name: RegisteredDefacer(d, "builtin") for name, d in builtin_defacers().items()}
    merged.update(_entry_point_defacers())
    return merged


def get_defacer(name: str) -> Defacer:
    known = registry()
    if name not in known:
        raise KeyError(f"unknown defacer {name!r}; known: {', '.join(sorted(known))}")
    return known[name].defacer
