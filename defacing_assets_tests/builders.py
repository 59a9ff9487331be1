"""Tiny scans and deliberately broken subject folders for tests."""

from __future__ import annotations

import gzip
import itertools
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

AFFINE = np.array([[2.0, 0, 0, -30], [0, 2.0, 0, -40], [0, 0, 3.0, -20], [0, 0, 0, 1]])
SHAPE = (24, 28, 16)


def tiny_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 20 * rng.standard_normal(SHAPE)).astype(np.float32)


def tiny_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[4:8, 5:9, 3:6] = 1
    labels[14:18, 5:9, 3:6] = 2
    labels[4:8, 12:16, 8:12] = 7
    return labels


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write as-is; a degenerate affine goes into the sform only (qform cannot hold it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_sform(affine, code=1)
    image.header.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(array, None, header=image.header), str(path))
    return path


def write_good_subject(root: Path, subject_id: str, seed: int = 0) -> Path:
    folder = root / subject_id
    write_nifti(folder / "image.nii.gz", tiny_image(seed))
    write_nifti(folder / "label.nii.gz", tiny_labels())
    return folder


def write_bad_subjects(root: Path) -> dict[str, str]:
    """One subject per bad input; returns subject id -> text the error must contain."""
    expected = {}

    def subject(name: str, image=None, label=None, label_affine=AFFINE, image_affine=AFFINE):
        folder = root / name
        write_nifti(folder / "image.nii.gz", tiny_image() if image is None else image, image_affine)
        write_nifti(
            folder / "label.nii.gz", tiny_labels() if label is None else label, label_affine
        )
        return folder

    folder = root / "random_bytes"
    folder.mkdir(parents=True)
    (folder / "image.nii.gz").write_bytes(np.random.default_rng(1).bytes(4000))
    write_nifti(folder / "label.nii.gz", tiny_labels())
    expected["random_bytes"] = "not a NIfTI file"

    folder = subject("truncated")
    data = (folder / "image.nii.gz").read_bytes()
    (folder / "image.nii.gz").write_bytes(data[: len(data) // 2])
    expected["truncated"] = "truncated"

    folder = root / "plain_text"
    folder.mkdir()
    (folder / "image.nii.gz").write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    write_nifti(folder / "label.nii.gz", tiny_labels())
    expected["plain_text"] = "not a NIfTI file"

    subject("four_d", image=np.stack([tiny_image(), tiny_image(1)], axis=-1))
    expected["four_d"] = "dimensions after squeezing"

    image = tiny_image()
    image[3, 3, 3] = np.nan
    subject("nan_voxels", image=image)
    expected["nan_voxels"] = "non-finite"

    subject("constant", image=np.full(SHAPE, 7.0, dtype=np.float32))
    expected["constant"] = "constant"

    degenerate = AFFINE.copy()
    degenerate[:, 2] = 0
    degenerate[3, 3] = 1
    subject("degenerate_affine", image_affine=degenerate, label_affine=degenerate)
    expected["degenerate_affine"] = "degenerate affine"

    subject("float_labels", label=tiny_labels().astype(np.float32) + 0.5)
    expected["float_labels"] = "not integer-valued"

    labels = tiny_labels()
    labels[0, 0, 0] = 12
    subject("label_out_of_range", label=labels)
    expected["label_out_of_range"] = "outside 0..8"

    subject("label_shape", label=tiny_labels()[:, :, :-1])
    expected["label_shape"] = "differs from image shape"

    shifted = AFFINE.copy()
    shifted[0, 3] += 0.01
    subject("label_affine", label_affine=shifted)
    expected["label_affine"] = "affine differs"
    return expected


METHODS = ["original", "pydeface"]
SUBJECTS = [f"S{i}" for i in range(8)]
OARS = ["Glnd_Submand_L", "Parotid_L", "LN_Neck_III_L"]


def study_metrics() -> pd.DataFrame:
    """segmentation_metrics rows of a constructed study: Dice 0.8 on original images, 0.5
    on pydeface images whatever the training set, a little subject noise; pydeface
    erased level III in every subject."""
    rng = np.random.default_rng(0)
    rows = []
    for subject, oar, trained, evaluated in itertools.product(SUBJECTS, OARS, METHODS, METHODS):
        removed = evaluated == "pydeface" and oar == "LN_Neck_III_L"
        base = 0.8 if evaluated == "original" else 0.5
        rows.append(
            {
                "subject": subject,
                "oar": oar,
                "train_defacer": trained,
                "eval_defacer": evaluated,
                "dice": np.nan if removed else base + rng.uniform(-0.02, 0.02),
                "omission": "completely removed by defacing" if removed else "",
            }
        )
    return pd.DataFrame(rows)


def write_tool(study: Path, name: str, body: str) -> None:
    """What a user does to add a command-line defacer: a script run by this Python and its
    stanza in the study's defacers.yaml."""
    script = study / f"{name}.py"
    script.write_text(body)
    stanza = textwrap.dedent(f"""
      {name}:
        command: ["{sys.executable}", "{script}", "{{input}}", "{{output}}"]
        timeout: 60
    """)
    yaml_path = study / "defacers.yaml"
    existing = yaml_path.read_text() if yaml_path.exists() else "defacers:\n"
    yaml_path.write_text(existing + textwrap.indent(stanza.strip("\n"), "  ") + "\n")
