"""Physics-based phantom of susceptibility-weighted (gradient-echo) MRI with microbleeds.

The phantom builds a head from the ICBM152 2009a maps that nilearn ships (grey matter,
white matter, brain mask, T1), adds deep grey nuclei, extra-cerebral CSF, a skull shell,
scalp, veins (branching cortical veins, medullary veins, internal cerebral veins and the
superior sagittal sinus), cerebral microbleeds (paramagnetic spheres) and optional
calcifications (diamagnetic spheres). It then simulates a gradient-echo acquisition:

* the field perturbation from the susceptibility map with the k-space dipole kernel
  ``D(k) = 1/3 - (k . b0)^2 / |k|^2`` where ``b0`` is the scanner z axis expressed in the
  (possibly oblique, permuted, flipped) array axes of the acquisition grid;
* the field of each lesion analytically (uniformly magnetised sphere) on a supersampled
  grid around the lesion, complex-averaged into the output voxels, so lesions "bloom"
  with echo time, field strength and susceptibility;
* intra-voxel dephasing of the tissue field (sinc of the phase change across a voxel),
  T2* decay per tissue (scaled with field strength), partial volume of all compartments;
* a smooth background field, a smooth receive phase offset, a phase handedness sign,
  a smooth multiplicative receive bias and complex Gaussian noise (Rician magnitude);
* a random head pose (rotation, translation), a random acquisition orientation (oblique
  slices, random storage order and axis flips) and an optional smooth nonlinear
  deformation of the anatomy.

The public API is :class:`PhantomConfig`, :data:`PROTOCOLS`, :func:`simulate_subject`,
:func:`write_bids_dataset` and :func:`write_example_dataset`. See ``docs/phantom.rst``.

Modules: :mod:`.config` (parameters, presets), :mod:`.geometry` (affines, grids),
:mod:`.anatomy` (template maps, tissue fractions), :mod:`.transforms` (head pose,
deformation), :mod:`.grid` (acquisition grid, field of view), :mod:`.veins`,
:mod:`.lesions`, :mod:`.physics` (tissue properties, dipole fields, decay),
:mod:`.smooth_field`, :mod:`.gre_signal` (signal assembly, noise), :mod:`.t1w`,
:mod:`.simulate` (:func:`simulate_subject`), :mod:`.randomise` (random scans per
generator family for domain randomisation), :mod:`.bids` and :mod:`.bids_files` (BIDS
writer), :mod:`.cli`.

Command line::

    python -m cmbprep.testing.phantom OUT_DIR --n-subjects 3 --seed 0 \\
        --protocol small --input-kind gre
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .bids import default_count_model, write_bids_dataset, write_example_dataset, write_subject
from .cli import main
from .config import PROTOCOLS, PhantomConfig
from .physics import (
    GAMMA_HZ_PER_T,
    TISSUES,
    dipole_kernel,
    field_from_susceptibility,
    sphere_field_ppm,
)
from .randomise import FAMILIES, ScanSpec, random_scan, simulate_scan
from .simulate import SubjectPhantom, simulate_subject

__all__ = [
    "FAMILIES",
    "GAMMA_HZ_PER_T",
    "PROTOCOLS",
    "TISSUES",
    "PhantomConfig",
    "ScanSpec",
    "SubjectPhantom",
    "default_count_model",
    "dipole_kernel",
    "field_from_susceptibility",
    "main",
    "random_scan",
    "simulate_scan",
    "simulate_subject",
    "source_fingerprint",
    "sphere_field_ppm",
    "write_bids_dataset",
    "write_example_dataset",
    "write_subject",
]


def source_fingerprint() -> str:
    """SHA-256 prefix (16 hex digits) of the generator's source: every ``.py`` file of
    this package, by name, in sorted order (name and content of each)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
