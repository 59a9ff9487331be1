"""Same scan, same seed: the same files, whatever the thread count.

Each built-in method runs twice through ``defacing-assets deface`` in its own process,
once with every library (ITK, torch/OpenMP, TensorFlow) on 1 thread and once on 2.
Before the study's seed reached the registration, SimpleITK drew its metric samples from
the clock and two runs differed in about a thousand voxels of a ``ci`` subject.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.defacers.registry import registry
from defacing_assets.imaging import save_volume

BUILTIN_METHODS = sorted(name for name, entry in registry().items() if entry.source == "builtin")
SEED = 5


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory) -> tuple[Path, Path]:
    scan, _ = generate_subject("DET001", 0, 17, profile="ci")
    folder = tmp_path_factory.mktemp("determinism")
    save_volume(scan.image, folder / "image.nii.gz")
    save_volume(scan.labels, folder / "labels.nii.gz")
    return folder / "image.nii.gz", folder / "labels.nii.gz"


def _deface_in_process(
    method: str, image: Path, labels: Path, out: Path, threads: int
) -> tuple[bytes, bytes]:
    out.mkdir()
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "defacing_assets.cli", "deface", "--method", method,
        "--seed", str(SEED), str(image), str(out / "defaced.nii.gz"),
        "--kept-mask", str(out / "kept_mask.nii.gz"),
    ]  # fmt: skip
    if registry()[method].defacer.uses_labels:
        command += ["--labels", str(labels)]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return (out / "defaced.nii.gz").read_bytes(), (out / "kept_mask.nii.gz").read_bytes()


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_same_scan_and_seed_give_identical_files_at_one_and_two_threads(
    method: str, scan_files: tuple[Path, Path], tmp_path: Path
) -> None:
    ready, why = registry()[method].defacer.available()
    if not ready:
        pytest.skip(why)
    image, labels = scan_files
    one_thread = _deface_in_process(method, image, labels, tmp_path / "threads1", 1)
    two_threads = _deface_in_process(method, image, labels, tmp_path / "threads2", 2)
    assert one_thread[0] == two_threads[0], f"{method}: defaced images differ"
    assert one_thread[1] == two_threads[1], f"{method}: kept masks differ"


def test_seeded_copy_leaves_the_registered_method_alone() -> None:
    registered = registry()["pydeface"].defacer
    seeded = registered.seeded(SEED + 1)
    assert (seeded.seed, registered.seed) == (SEED + 1, 0)
    assert type(seeded) is type(registered)
