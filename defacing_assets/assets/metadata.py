"""Shared metadata helpers for asset bodies."""

from __future__ import annotations

import base64

from dagster import MetadataValue


def png_metadata(png: bytes, caption: str) -> MetadataValue:
    """An inline image the Dagster UI shows in the materialization's metadata."""
    encoded = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"![{caption}](data:image/png;base64,{encoded})")
