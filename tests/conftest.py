"""Shared fixtures: small BIDS datasets written to disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# One thread per ANTs call in tests: deterministic and fair to the parallel workers.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    """Write ``data`` as NIfTI (float32) with an affine (1.5 mm isotropic by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine
    nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine).to_filename(path)
    return path


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def make_tiny_gre_dataset(root: Path, subjects=("01",), sessions=(None,), runs=(None,),
                          acq=None, kind="gre", shape=(24, 24, 16), seed=0) -> Path:
    """A minimal valid BIDS dataset of GRE-type images (not anatomically meaningful).

    Used for tests of input discovery and exit codes that stop before processing.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0"})
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{s}\t50\n" for s in subjects))
    for sub in subjects:
        for ses in sessions:
            for run in runs:
                folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
                stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + \
                    (f"_acq-{acq}" if acq else "") + (f"_run-{run}" if run else "")
                mag = 100 + 10 * rng.standard_normal(shape)
                phase = rng.uniform(-np.pi, np.pi, shape)
                meta = {"EchoTime": 0.02, "MagneticFieldStrength": 3}
                if kind == "gre":
                    write_nifti(folder / f"{stem}_part-mag_T2starw.nii.gz", mag)
                    write_json(folder / f"{stem}_part-mag_T2starw.json", meta)
                    write_nifti(folder / f"{stem}_part-phase_T2starw.nii.gz", phase)
                    write_json(folder / f"{stem}_part-phase_T2starw.json",
                               {**meta, "Units": "rad"})
                elif kind == "megre":
                    for echo, te in ((1, 0.01), (2, 0.02), (3, 0.03)):
                        write_nifti(folder / f"{stem}_echo-{echo}_part-mag_MEGRE.nii.gz", mag)
                        write_json(folder / f"{stem}_echo-{echo}_part-mag_MEGRE.json",
                                   {**meta, "EchoTime": te})
                elif kind == "swi":
                    write_nifti(folder / f"{stem}_swi.nii.gz", mag)
                    write_json(folder / f"{stem}_swi.json", meta)
                    (root / ".bidsignore").write_text("*_swi.nii.gz\n*_swi.json\n")
                elif kind == "magnitude":
                    write_nifti(folder / f"{stem}_T2starw.nii.gz", mag)
                    write_json(folder / f"{stem}_T2starw.json", meta)
                elif kind == "t1w-only":
                    write_nifti(folder / f"{stem}_T1w.nii.gz", mag)
                    write_json(folder / f"{stem}_T1w.json", meta)
    return root


@pytest.fixture
def tiny_gre(tmp_path):
    return make_tiny_gre_dataset(tmp_path / "bids")
