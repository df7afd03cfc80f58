"""Sliding-slab minimum-intensity projection (mIP).

The projection runs along the *acquisition slice axis*, which is read from the image
affine rather than assumed to be the third array axis:

1. The voxel size along each array axis is the norm of the corresponding affine column
   (:func:`cmbprep.algorithms.arrays.voxel_sizes`).
2. The slice axis (:func:`cmbprep.algorithms.arrays.slice_axis`) is the array axis
   with the largest voxel size (thick slices are the rule for SWI, e.g. 0.5 x 0.5 x 1 mm
   or 0.5 x 0.5 x 2 mm).
3. If several axes share the largest voxel size (within 10 %), e.g. isotropic data,
   the one among them whose direction is most aligned with the scanner
   superior-inferior axis (RAS+ ``z``, the B0 direction) is taken, so isotropic data
   get the conventional axial projection whatever the storage order.

The output keeps the input grid: voxel ``k`` along the slice axis holds the minimum of
the input over the ``n`` slices ``k - n // 2 ... k + n // 2`` (clipped at the volume
edges). ``n`` is the odd number of slices closest to ``slab_mm / slice_thickness``
(ties go to the smaller one, so 8 mm at 1 mm slices gives 7 slices, at 2 mm 3 slices).
An odd, centred window makes the result independent of the direction the slices are
stored in (a flipped slice axis gives the same projection).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .arrays import slice_axis, voxel_sizes

__all__ = ["minip_window", "sliding_minip"]


def minip_window(affine, slab_mm=8.0):
    """Slice axis and number of slices of the projection slab.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel index to scanner RAS+ mm transform.
    slab_mm : float, optional
        Slab thickness in millimetres (default 8 mm).

    Returns
    -------
    axis : int
        Array axis of the slices (see :func:`slice_axis`).
    n_slices : int
        Odd number of slices closest to ``slab_mm / slice_thickness`` (ties: smaller).
    """
    if not slab_mm > 0:
        raise ValueError(f"slab_mm must be positive, got {slab_mm}")
    axis = slice_axis(affine)
    return axis, _odd_slices(slab_mm, voxel_sizes(affine)[axis])


def _odd_slices(slab_mm, thickness_mm):
    ratio = round(slab_mm / thickness_mm, 4)  # header sizes carry float32 noise
    half = int(np.ceil((ratio - 1) / 2 - 0.5 - 1e-9))  # n = 2 * half + 1, ties: smaller
    return max(1, 2 * max(half, 0) + 1)


def sliding_minip(image, affine, slab_mm=8.0, *, axis=None):
    """Sliding-slab minimum-intensity projection on the input grid.

    Parameters
    ----------
    image : (X, Y, Z) array_like
        Image to project (typically the SWI), stored voxel order.
    affine : (4, 4) array_like
        Voxel index to scanner RAS+ mm transform of ``image``.
    slab_mm : float, optional
        Slab thickness in millimetres (default 8 mm).
    axis : int, optional
        Force the projection axis instead of reading it from ``affine``.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``image``. Voxel ``k`` along the slice axis is the
        minimum over slices ``k - n // 2 ... k + n // 2`` (clipped at the edges).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"sliding_minip expects a 3D image, got shape {image.shape}")
    found_axis, n_slices = minip_window(affine, slab_mm)
    if axis is None:
        axis = found_axis
    else:
        n_slices = _odd_slices(slab_mm, voxel_sizes(affine)[axis])
    if n_slices == 1:
        return image.copy()
    # minimum_filter1d with odd size and origin 0 covers k - n//2 ... k + n//2;
    # mode="nearest" repeats the edge slices, which never lowers the minimum, so the
    # window is effectively clipped at the volume edges.
    return ndimage.minimum_filter1d(image, size=n_slices, axis=axis, mode="nearest")
