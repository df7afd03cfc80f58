"""Coordinate helpers: 4x4 affines applied to points, rotations, voxel-centre grids."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["apply_affine", "grid_points", "rotation_matrix", "shifted_affine"]


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (..., 3) points.

    Written out term by term (not :func:`nibabel.affines.apply_affine`, whose matrix
    product rounds differently) so that simulated coordinates stay bit-stable.
    """
    points = np.asarray(points, dtype=float)
    out = np.empty(points.shape, float)
    for r in range(3):
        out[..., r] = (points[..., 0] * affine[r, 0] + points[..., 1] * affine[r, 1]
                       + points[..., 2] * affine[r, 2] + affine[r, 3])
    return out


def rotation_matrix(axis, angle_rad) -> np.ndarray:
    """3x3 rotation by ``angle_rad`` about ``axis`` (Rodrigues' formula)."""
    axis = np.asarray(axis, float)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    C = 1 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


def grid_points(affine, shape, chunk_axis0):
    """Scanner mm coordinates (N, 3) of voxel centres for slices ``chunk_axis0`` of axis 0."""
    i = np.arange(chunk_axis0.start, chunk_axis0.stop, dtype=float)[:, None, None]
    j = np.arange(shape[1], dtype=float)[None, :, None]
    k = np.arange(shape[2], dtype=float)[None, None, :]
    out = np.empty((len(i.ravel()), shape[1], shape[2], 3))
    for r in range(3):
        out[..., r] = affine[r, 0] * i + affine[r, 1] * j + affine[r, 2] * k + affine[r, 3]
    return out.reshape(-1, 3)


def shifted_affine(affine, starts):
    """Affine of the sub-grid whose first voxel is voxel ``starts`` of ``affine``'s grid."""
    out = affine.copy()
    out[:3, 3] = apply_affine(affine, np.array([starts], float))[0]
    return out
