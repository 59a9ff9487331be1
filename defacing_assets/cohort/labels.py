"""The one label table: OAR names, label values, and ROI-name matching.

Label order is the study's (STUDY.md): 0 background, then submandibular
glands, level II nodes, level III nodes and parotids, left before right.
Canonical names are TG-263.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

OAR_LABELS: dict[str, int] = {
    "Glnd_Submand_L": 1,
    "Glnd_Submand_R": 2,
    "LN_Neck_II_L": 3,
    "LN_Neck_II_R": 4,
    "LN_Neck_III_L": 5,
    "LN_Neck_III_R": 6,
    "Parotid_L": 7,
    "Parotid_R": 8,
}
LABEL_NAMES: dict[int, str] = {label: name for name, label in OAR_LABELS.items()}
N_CLASSES = 9
"""Background plus eight OARs."""

_LEFT = {"l", "lt", "left", "sin", "links"}
_RIGHT = {"r", "rt", "right", "dx", "rechts"}
_NODE_WORDS = {"ln", "level", "lvl", "node", "nodes", "neck", "lymph", "lnn"}


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name.strip())
    return [token for token in re.split(r"[^a-z0-9]+", spaced.lower()) if token]


def _side(tokens: list[str]) -> str | None:
    sides = {"L" for t in tokens if t in _LEFT} | {"R" for t in tokens if t in _RIGHT}
    return sides.pop() if len(sides) == 1 else None


def _structure(tokens: list[str]) -> str | None:
    joined = "".join(tokens)
    if any(t.startswith("parotid") for t in tokens):
        return "Parotid"
    if "submand" in joined or "smg" in tokens:
        return "Glnd_Submand"
    if any(t in _NODE_WORDS or t.startswith("level") or t.startswith("lvl") for t in tokens):
        levels = set()
        for token in tokens:
            level = re.sub(r"^(level|lvl|ln)", "", token)
            if level in {"iii", "3"}:
                levels.add("III")
            elif level in {"ii", "2", "iia", "iib", "2a", "2b"}:
                levels.add("II")
        if len(levels) == 1:
            return f"LN_Neck_{levels.pop()}"
    return None


def label_for_roi(name: str, extra: Mapping[str, int] | None = None) -> int | None:
    """The label value for an ROI name, or None when it is not one of the eight OARs.

    ``extra`` maps site-specific names to labels and wins over the built-in
    rules (matched case-insensitively).
    """
    if extra:
        lowered = {key.lower(): value for key, value in extra.items()}
        if name.lower() in lowered:
            return lowered[name.lower()]
    tokens = _tokens(name)
    structure, side = _structure(tokens), _side(tokens)
    if structure is None or side is None:
        return None
    return OAR_LABELS[f"{structure}_{side}"]
