"""Array helpers shared by the algorithms.

Voxel geometry read from the affine (voxel sizes, slice axis, the B0 direction), block
reduction to a coarser grid and interpolation back to the fine grid, and structuring
elements given in millimetres. Every function takes physical units (mm) or an affine and
works on arrays in their stored voxel order.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes as _voxel_sizes

__all__ = [
    "b0_direction",
    "ball_mm",
    "block_factors",
    "block_reduce",
    "bounding_box",
    "box_around",
    "sigma_voxels",
    "slice_axis",
    "upsample_linear",
    "upsample_nearest",
    "voxel_sizes",
]


def voxel_sizes(affine):
    """Voxel size (mm) along each array axis of a 4x4 voxel-to-mm ``affine``.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel index to scanner RAS+ mm transform.

    Returns
    -------
    numpy.ndarray of shape (3,), float64
        Norms of the first three affine columns (:func:`nibabel.affines.voxel_sizes`).
    """
    return _voxel_sizes(np.asarray(affine, dtype=float))


#: Voxel axes whose sizes differ by at most this fraction count as equally thick.
SLICE_AXIS_TOLERANCE = 0.10


def slice_axis(affine):
    """Array axis (0, 1 or 2) of the acquisition slices, read from ``affine``.

    The one rule every step uses (projection, candidate rules, reports): the thickest
    voxel axis; axes within :data:`SLICE_AXIS_TOLERANCE` (10 %) of the thickest tie,
    and a tie goes to the axis most aligned with the scanner ``z`` (superior, B0)
    direction. So 0.5x0.5x1 mm gives the 1 mm axis, while 0.9x0.86x0.86 mm or 1 mm
    isotropic voxels give the axis closest to head-foot (axial slices).

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel index to scanner RAS+ mm transform.

    Returns
    -------
    int
    """
    affine = np.asarray(affine, dtype=float)
    sizes = voxel_sizes(affine)
    candidates = np.flatnonzero(sizes * (1.0 + SLICE_AXIS_TOLERANCE) >= sizes.max())
    if candidates.size == 1:
        return int(candidates[0])
    alignment = np.abs(affine[2, :3]) / sizes
    return int(candidates[np.argmax(alignment[candidates])])


def b0_direction(affine):
    """Unit vector of the scanner z axis (B0) expressed along the array axes.

    Component ``a`` is the cosine between array axis ``a`` (its physical direction)
    and the scanner z axis; used to orient dipole kernels and to compare phase along
    and across B0.

    Parameters
    ----------
    affine : (4, 4) array_like

    Returns
    -------
    numpy.ndarray of shape (3,)
    """
    affine = np.asarray(affine, dtype=float)
    directions = affine[:3, :3] / voxel_sizes(affine)  # columns: unit axis directions
    return directions[2] / np.linalg.norm(directions[2])


def sigma_voxels(sigma_mm, voxel_size):
    """A Gaussian's standard deviation ``sigma_mm`` (mm) in voxels along each axis."""
    return [float(sigma_mm) / float(v) for v in voxel_size]


def bounding_box(mask, margin_vox=(0, 0, 0)):
    """Tuple of slices of the smallest box holding every True voxel of ``mask``.

    Parameters
    ----------
    mask : (X, Y, Z) array_like of bool
    margin_vox : sequence of 3 int, optional
        Voxels added on both sides along each axis (clipped to the volume).

    Returns
    -------
    tuple of slice, or None (empty mask)
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        start = max(int(present[0]) - int(margin_vox[axis]), 0)
        stop = min(int(present[-1]) + 1 + int(margin_vox[axis]), mask.shape[axis])
        box.append(slice(start, stop))
    return tuple(box)


def box_around(center_vox, half_width_vox, shape):
    """Tuple of slices of the box ``center +- half_width`` voxels, clipped to ``shape``.

    Parameters
    ----------
    center_vox : sequence of 3 int
        Centre voxel (rounded by the caller).
    half_width_vox : sequence of 3 int
        Voxels on each side of the centre along each axis (e.g. ``ceil(radius_mm / v)``).
    shape : sequence of 3 int
        Shape of the array the box indexes.
    """
    return tuple(slice(max(int(c) - int(h), 0), min(int(c) + int(h) + 1, int(n)))
                 for c, h, n in zip(center_vox, half_width_vox, shape))


def block_factors(voxel_size, resolution_mm, *, rounding="floor"):
    """Integer block sizes per axis that bring ``voxel_size`` near ``resolution_mm``.

    Parameters
    ----------
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    resolution_mm : float
        Wanted voxel size of the coarse grid in mm.
    rounding : {"floor", "round"}
        ``"floor"`` never makes a coarse voxel larger than ``resolution_mm``;
        ``"round"`` takes the nearest integer factor.

    Returns
    -------
    tuple of int (each >= 1)
    """
    ratio = float(resolution_mm) / np.asarray(voxel_size, dtype=float)
    if rounding == "floor":
        factors = np.floor(ratio + 1e-6)
    elif rounding == "round":
        factors = np.round(ratio)
    else:
        raise ValueError(f"rounding must be 'floor' or 'round', not {rounding!r}")
    return tuple(max(1, int(f)) for f in factors)


def block_reduce(data, factors, func="mean", *, edges="replicate", dtype=np.float64):
    """Reduce ``data`` over non-overlapping blocks of ``factors`` voxels.

    Parameters
    ----------
    data : (X, Y, Z) array_like
    factors : sequence of 3 int
        Block size along each axis.
    func : {"mean", "max", "all", "any"}
        Reduction within a block.
    edges : {"replicate", "constant", "truncate"}
        How a last, partial block is completed: by repeating the edge voxel, with zeros
        (False), or dropped.
    dtype : numpy dtype, optional
        Accumulator and result type of ``"mean"`` (default float64).

    Returns
    -------
    numpy.ndarray of shape ``ceil(shape / factors)`` (``floor`` with ``"truncate"``)
    """
    factors = tuple(int(f) for f in factors)
    data = np.asarray(data)
    if edges == "truncate":
        data = data[tuple(slice(0, n // f * f) for n, f in zip(data.shape, factors))]
    else:
        pads = [(0, (-n) % f) for n, f in zip(data.shape, factors)]
        if any(p[1] for p in pads):
            mode = {"replicate": "edge", "constant": "constant"}[edges]
            data = np.pad(data, pads, mode=mode)
    shape = []
    for n, f in zip(data.shape, factors):
        shape += [n // f, f]
    blocks = data.reshape(shape)
    axes = (1, 3, 5)
    if func == "max":
        return blocks.max(axis=axes)
    if func == "all":
        return blocks.all(axis=axes)
    if func == "any":
        return blocks.any(axis=axes)
    if func != "mean":
        raise ValueError(f"func must be mean, max, all or any, not {func!r}")
    if factors[2] == 1 or np.dtype(dtype) != np.float64:
        return blocks.mean(axis=axes, dtype=dtype)
    # small innermost block factor: add the block offsets as strided slabs (faster than
    # a reduction over short inner axes), accumulated in float64
    acc = np.zeros(shape[0::2], np.float64)
    for a in range(factors[0]):
        for b in range(factors[1]):
            for c in range(factors[2]):
                acc += blocks[:, a, :, b, :, c]
    acc /= factors[0] * factors[1] * factors[2]
    return acc


def upsample_nearest(coarse, factors, shape):
    """Inverse of :func:`block_reduce` by repetition: every voxel takes its block's value.

    Parameters
    ----------
    coarse : (x, y, z) array_like
    factors : sequence of 3 int
    shape : sequence of 3 int
        Shape of the fine grid.
    """
    index = [np.minimum(np.arange(int(n)) // int(f), m - 1)
             for n, f, m in zip(shape[:3], factors, np.shape(coarse))]
    return np.asarray(coarse)[np.ix_(*index)]


def upsample_linear(coarse, factors, shape, window=None):
    """Separable linear interpolation of block means back to the fine grid (float32).

    Block ``b`` of size ``f`` along an axis has its centre at fine index
    ``b * f + (f - 1) / 2``; values beyond the outer centres are held constant.

    Parameters
    ----------
    coarse : (x, y, z) array_like
        Block means, e.g. from :func:`block_reduce`.
    factors : sequence of 3 int
    shape : sequence of 3 int
        Shape of the fine grid.
    window : tuple of 3 slice, optional
        Restrict the output to this sub-box of the fine grid (explicit start/stop);
        each voxel gets exactly the value it has in the full output.

    Returns
    -------
    numpy.ndarray of float32
    """
    out = np.asarray(coarse, dtype=np.float32)
    factors = tuple(int(f) for f in factors)
    if window is None:
        window = tuple(slice(0, int(n)) for n in shape)
    # expand the axes with the largest factor first (smallest intermediate arrays)
    for axis in sorted(range(out.ndim), key=lambda a: -factors[a]):
        f, n = factors[axis], int(shape[axis])
        start, stop = window[axis].start, window[axis].stop
        m = out.shape[axis]
        if f == 1 and m == n:
            if (start, stop) != (0, n):
                out = out[(slice(None),) * axis + (slice(start, stop),)]
            continue
        pos = (np.arange(start, stop) - (f - 1) / 2) / f
        pos = np.clip(pos, 0, m - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, m - 1)
        shape_w = [1] * out.ndim
        shape_w[axis] = stop - start
        w = (pos - lo).astype(np.float32).reshape(shape_w)
        # only the coarse samples this window uses
        first, last = int(lo.min()), int(hi.max()) + 1
        out = out[(slice(None),) * axis + (slice(first, last),)]
        lo -= first
        hi -= first
        upper = np.take(out, hi, axis=axis)
        out = np.take(out, lo, axis=axis)
        upper -= out
        upper *= w
        out += upper
        del upper
    return np.ascontiguousarray(out)


def ball_mm(radius_mm, voxel_size, *, tolerance_mm2=1e-6):
    """Structuring element: the voxels within ``radius_mm`` of the centre voxel.

    Parameters
    ----------
    radius_mm : float
    voxel_size : sequence of 3 floats
        Voxel size in mm (anisotropic voxels give an ellipsoid in voxel units).
    tolerance_mm2 : float, optional
        A voxel is inside when its squared distance is at most ``radius_mm ** 2 +
        tolerance_mm2`` (default 1e-6; 0 gives the strict test the microbleed
        detector uses).

    Returns
    -------
    numpy.ndarray of bool, odd size along each axis
    """
    voxel_size = np.asarray(voxel_size, dtype=float)
    half = np.maximum(np.floor(radius_mm / voxel_size).astype(int), 0)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * v) ** 2 for g, v in zip(grids, voxel_size))
    return dist2 <= radius_mm ** 2 + tolerance_mm2
