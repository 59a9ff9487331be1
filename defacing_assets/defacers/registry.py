"""The one registry of defacers: name -> Defacer.

Sources are merged by name, a later source overriding an earlier one (the
winner's source is recorded, so ``defacing-assets defacers`` shows it):

1. built-ins: the Python methods below and the command-line tools in the
   package's ``tools.yaml``;
2. Python entry points in the group ``defacing_assets.defacers`` (each loads
   a Defacer subclass or instance);
3. the study folder's ``defacers.yaml`` (command-line tools a user adds).

Adding a defacer is therefore one module with an entry point, or one YAML
stanza: nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from defacing_assets.defacers.base import Defacer
from defacing_assets.defacers.deepdefacer import DeepDefacer
from defacing_assets.defacers.hnc_safe import HncSafe
from defacing_assets.defacers.original import Original
from defacing_assets.defacers.pydeface import Pydeface
from defacing_assets.defacers.quickshear import Quickshear

ENTRY_POINT_GROUP = "defacing_assets.defacers"
DEFACERS_FILE = "defacers.yaml"


@dataclass(frozen=True)
class RegisteredDefacer:
    defacer: Defacer
    source: str
    """``builtin``, ``builtin tools.yaml``, ``entry point <module:attr>`` or the YAML path."""
    overrides: str = ""
    """The source this one replaced, when names clashed."""


def _python_builtins() -> list[Defacer]:
    return [Original(), Pydeface(), Quickshear(), DeepDefacer(), HncSafe()]


def _command_line_defacers(specs: dict, source: str) -> dict[str, tuple[Defacer, str]]:
    from defacing_assets.defacers.external import CommandLineDefacer

    return {name: (CommandLineDefacer(spec), source) for name, spec in specs.items()}


def _entry_point_defacers() -> dict[str, tuple[Defacer, str]]:
    found = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = point.load()
        defacer = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(defacer, Defacer):
            raise TypeError(
                f"entry point {point.name} = {point.value!r} ({ENTRY_POINT_GROUP}) "
                "is not a Defacer subclass or instance"
            )
        found[point.name] = (defacer, f"entry point {point.value}")
    return found


def registry(study_defacers: str | Path | None = None) -> dict[str, RegisteredDefacer]:
    """Every known defacer by name, available or not.

    Args:
        study_defacers: the study's ``defacers.yaml``; ignored when it does not exist.
    """
    from defacing_assets.defacers.yaml_config import builtin_tool_specs, load_tool_specs

    layers = [
        {d.name: (d, "builtin") for d in _python_builtins()},
        _command_line_defacers(builtin_tool_specs(), "builtin tools.yaml"),
        _entry_point_defacers(),
    ]
    if study_defacers is not None and Path(study_defacers).exists():
        layers.append(_command_line_defacers(load_tool_specs(study_defacers), str(study_defacers)))
    merged: dict[str, RegisteredDefacer] = {}
    for layer in layers:
        for name, (defacer, source) in layer.items():
            replaced = merged[name].source if name in merged else ""
            merged[name] = RegisteredDefacer(defacer, source, replaced)
    return merged


def registered(name: str, study_defacers: str | Path | None = None) -> RegisteredDefacer:
    """One defacer with its source; KeyError naming the known ones when there is none."""
    known = registry(study_defacers)
    if name not in known:
        raise KeyError(f"unknown defacer {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def get_defacer(name: str, study_defacers: str | Path | None = None) -> Defacer:
    return registered(name, study_defacers).defacer


def available_defacers(study_defacers: str | Path | None = None) -> list[str]:
    """Names of the defacers that can run on this machine, sorted."""
    known = registry(study_defacers)
    return sorted(name for name, entry in known.items() if entry.defacer.available()[0])
