"""What both detectors share: input checks, the result type and the coordinate
columns of the candidate table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..arrays import voxel_sizes

__all__ = ["DetectionResult", "candidate_frame", "check_inputs", "jsonable",
           "voxel_size_tuple"]


@dataclass
class DetectionResult:
    """Output of a detector.

    Attributes
    ----------
    candidates : pandas.DataFrame
        One row per candidate (``candidate_id`` from 1), voxel/scanner coordinates,
        features, ``score`` and ``status``.
    labels : ndarray of int32
        Candidate segmentation labelled with ``candidate_id`` (0 elsewhere).
    parameters : dict
        Detector name, version and every parameter used.
    """

    candidates: pd.DataFrame
    labels: np.ndarray
    parameters: dict = field(default_factory=dict)


def check_inputs(swi, brain_mask, affine):
    """SWI, brain mask (bool) and affine (float) as arrays; ValueError when they disagree."""
    swi = np.asarray(swi)
    if swi.ndim != 3:
        raise ValueError(f"SWI must be 3D, got shape {swi.shape}")
    brain = np.asarray(brain_mask, dtype=bool)
    if brain.shape != swi.shape:
        raise ValueError(f"brain mask shape {brain.shape} differs from SWI shape {swi.shape}")
    if not brain.any():
        raise ValueError("brain mask is empty")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError("affine must be 4x4")
    return swi, brain, affine


def voxel_size_tuple(affine):
    """Voxel edge lengths (mm) from a 4x4 voxel-to-world affine, as a tuple of floats."""
    return tuple(float(v) for v in voxel_sizes(affine))


def candidate_frame(rows, affine):
    """Candidate table from per-candidate rows holding a voxel ``centroid``.

    The centroid becomes ``x y z`` (scanner mm) and rounded ``i j k`` columns right
    after ``candidate_id``; an empty table has the columns ``candidate_id x y z i j k
    score status reason``.
    """
    base = ["candidate_id", "x", "y", "z", "i", "j", "k"]
    if not rows:
        return pd.DataFrame(columns=base + ["score", "status", "reason"])
    centroids = np.array([r.pop("centroid") for r in rows])
    table = pd.DataFrame(rows)
    ijk_float = np.atleast_2d(np.asarray(centroids, dtype=float))
    xyz = ijk_float @ affine[:3, :3].T + affine[:3, 3]
    ijk = np.rint(centroids).astype(int)
    coords = pd.DataFrame({
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "i": ijk[:, 0], "j": ijk[:, 1], "k": ijk[:, 2],
    })
    return pd.concat([table[["candidate_id"]], coords, table.drop(columns="candidate_id")],
                     axis=1)


def jsonable(parameters):
    """A copy of ``parameters`` that :mod:`json` can write (tuples as lists, numpy
    scalars as Python numbers, non-finite floats as None)."""
    out = {}
    for key, value in parameters.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out
