"""The on-disk pre-processing cache: digest checked before use, tensors only, a bad entry
set aside and recomputed, never unpickled into running code."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from defacing_assets.imaging.volume import Volume
from defacing_assets.profiles import get_profile
from defacing_assets.segmentation import data
from defacing_assets.segmentation.data import clear_memory_cache, make_subject

PROFILE = get_profile("ci")
DIGEST_SUFFIX = ".sha256"
"""An entry's sha256 is stored beside it as ``<entry name>.sha256``."""


class RunsCode:
    """Unpickling this runs a shell command: what a crafted cache entry would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _volumes() -> tuple[Volume, Volume]:
    """A tiny 6 mm scan (pre-processing takes a fraction of a second)."""
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    image = np.zeros((36, 36, 34), dtype=np.float32)
    image[6:30, 6:30, 4:30] = 100.0
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[15:20, 15:20, 15:20] = 3
    return Volume(image, affine), Volume(labels, affine)


@pytest.fixture
def cached(tmp_path: Path):
    """One subject pre-processed into ``tmp_path``'s cache; the memory cache cleared."""
    image, labels = _volumes()
    clear_memory_cache()
    subject = make_subject(image, labels, None, PROFILE, key="S1/original", cache_dir=tmp_path)
    [entry] = tmp_path.glob("*.pt")
    clear_memory_cache()
    yield subject, entry, (image, labels)
    clear_memory_cache()


def _again(tmp_path: Path, volumes):
    return make_subject(*volumes, None, PROFILE, key="S1/original", cache_dir=tmp_path)


def test_an_entry_is_stored_with_its_digest_and_reused(tmp_path, cached, monkeypatch) -> None:
    subject, entry, volumes = cached
    digest = entry.with_name(entry.name + DIGEST_SUFFIX)
    assert digest.read_text() == hashlib.sha256(entry.read_bytes()).hexdigest()
    torch.load(entry, weights_only=True)  # tensors only: loads without any allow-list

    def no_preprocessing(profile):
        raise AssertionError("the cached entry should have been used")

    monkeypatch.setattr(data, "preprocessing", no_preprocessing)
    again = _again(tmp_path, volumes)
    assert torch.equal(again["image"].data, subject["image"].data)
    np.testing.assert_array_equal(again["label"].affine, subject["label"].affine)


@pytest.mark.parametrize("with_digest", [False, True], ids=["no-digest", "matching-digest"])
def test_a_crafted_entry_runs_no_code_and_is_recomputed(
    tmp_path, cached, caplog, with_digest: bool
) -> None:
    """An entry whose unpickling would run a command: not loaded without its digest, and
    refused by weights_only loading when an attacker wrote a matching digest too."""
    subject, entry, volumes = cached
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"image": RunsCode(marker)}, buffer)
    entry.write_bytes(buffer.getvalue())
    digest = entry.with_name(entry.name + DIGEST_SUFFIX)
    if with_digest:
        digest.write_text(hashlib.sha256(buffer.getvalue()).hexdigest())
    else:
        digest.unlink(missing_ok=True)

    try:
        with caplog.at_level(logging.WARNING):
            again = _again(tmp_path, volumes)
    finally:
        assert not marker.exists(), "loading the cache ran code"
    assert torch.equal(again["image"].data, subject["image"].data), "recomputed"
    [moved] = tmp_path.glob(f"{entry.name}.corrupt-*")
    assert moved.read_bytes() == buffer.getvalue(), "the crafted file is kept aside"
    reason = "unsafe content refused" if with_digest else "no .sha256 beside it"
    assert any(str(entry) in m and reason in m for m in caplog.messages), caplog.messages
    assert digest.read_text() == hashlib.sha256(entry.read_bytes()).hexdigest(), "rewritten"


def test_an_entry_that_does_not_match_its_digest_is_not_used(tmp_path, cached, caplog) -> None:
    """A tampered or torn entry (here: other tensors under the old digest) is recomputed."""
    subject, entry, volumes = cached
    buffer = io.BytesIO()
    zeros = {"image": torch.zeros(1, 4, 4, 4), "label": torch.zeros(1, 4, 4, 4, dtype=torch.int64)}
    torch.save({**zeros, "affine": torch.eye(4, dtype=torch.float64)}, buffer)
    entry.write_bytes(buffer.getvalue())

    with caplog.at_level(logging.WARNING):
        again = _again(tmp_path, volumes)
    assert torch.equal(again["image"].data, subject["image"].data)
    assert any(str(entry) in m and "sha256 does not match" in m for m in caplog.messages)
