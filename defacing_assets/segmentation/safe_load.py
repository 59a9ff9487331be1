"""Loading scratch files (checkpoints, pre-processing caches) without running their code.

Scratch folders are writable by more than this process, and ``torch.load`` with
``weights_only=False`` unpickles arbitrary objects: a crafted ``checkpoint.pt`` ran a
shell command when training started. Everything here loads with ``weights_only=True``
(tensors, dicts, lists, tuples, numbers, strings); what the loaders store is restricted
to those types, so no allow-list of extra classes is needed. A file that cannot be
loaded is moved aside, so a retry starts clean instead of failing on it every time.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from upath import UPath

from defacing_assets.imaging.atomic import move_aside

logger = logging.getLogger(__name__)


def load_tensors(source: bytes | str | Path) -> Any:
    """``torch.load`` of ``source`` (bytes or a local path) onto the CPU, refusing anything
    but tensors and plain containers/numbers (no code runs while loading)."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    return torch.load(stream, map_location="cpu", weights_only=True)


def load_problem(error: BaseException) -> str:
    """One line saying why a file did not load (torch's messages run to paragraphs)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, pickle.UnpicklingError) and len(lines) > 1:
        # torch: "Weights only load failed. ..." then what it refused, e.g. "Trying to
        # load unsupported GLOBAL posix.system whose module posix is blocked."
        return f"unsafe content refused: {lines[1]}"
    first = lines[0].split(". ")[0] if lines else repr(error)
    return f"{type(error).__name__}: {first}"


def set_aside(
    path: UPath | Path, problem: str, what: str, log: Callable[[str], object] | None = None
) -> str:
    """Move an unusable file aside (``<name>.corrupt-<time>``) and report it, naming the
    file and the reason; returns the message. A file that vanished meanwhile is fine."""
    try:
        moved = f"moved to {move_aside(path).name}"
    except FileNotFoundError:
        moved = "already gone"
    message = f"{what} {path} is not used ({problem}); {moved}"
    logger.warning(message)
    if log is not None:
        log(message)
    return message
