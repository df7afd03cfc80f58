"""Head mask of a magnitude-like image (Otsu and morphology in mm) and erosion of a mask
by a distance in mm.

Both work on a coarse copy of the image (about ``working_resolution_mm`` per voxel, by
block averaging), which keeps morphology in millimetres cheap on whole-head 0.5 mm data,
and bring the result back to the input grid by nearest-neighbour lookup. Head mask
steps: Gaussian smoothing (``smoothing_mm`` FWHM), Otsu threshold, morphological closing
with a ball of ``closing_mm`` radius, hole filling (3D, then slice by slice along every
axis), largest connected component, dilation by ``dilation_mm``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from .arrays import ball_mm, block_factors, block_reduce, upsample_nearest

__all__ = ["erode_mask_mm", "head_mask"]


def erode_mask_mm(mask, voxel_size, radius_mm, *, working_resolution_mm=2.0):
    """Voxels of ``mask`` farther than ``radius_mm`` from its outside (and from the
    volume edge), computed on a ~``working_resolution_mm`` grid.

    Parameters
    ----------
    mask : (X, Y, Z) array_like of bool
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    radius_mm : float
        Erosion distance in mm.
    working_resolution_mm : float, optional
        Approximate voxel size of the grid the distance map is computed on (default 2 mm).

    Returns
    -------
    numpy.ndarray of bool, same shape as ``mask``
    """
    mask = np.asarray(mask, dtype=bool)
    voxel_size = np.asarray(voxel_size, dtype=float)
    factors = block_factors(voxel_size, working_resolution_mm)
    coarse = block_reduce(mask.astype(np.float32), factors) > 0.5
    coarse_vox = voxel_size * np.asarray(factors)
    dist = ndimage.distance_transform_edt(np.pad(coarse, 1), sampling=coarse_vox)
    inner = dist[1:-1, 1:-1, 1:-1] > radius_mm
    return upsample_nearest(inner, factors, mask.shape) & mask


def head_mask(image, voxel_size, *, working_resolution_mm=2.0, smoothing_mm=4.0,
              closing_mm=6.0, dilation_mm=2.0):
    """Binary head (or brain-crop) mask by Otsu thresholding and morphology in mm.

    Parameters
    ----------
    image : (X, Y, Z) array_like
        Magnitude-like image (non-negative), stored voxel order.
    voxel_size : sequence of 3 floats
        Voxel size in mm along each array axis.
    working_resolution_mm : float, optional
        Approximate voxel size of the coarse grid the mask is computed on (default 2 mm).
    smoothing_mm : float, optional
        FWHM in mm of the Gaussian applied before thresholding (default 4 mm).
    closing_mm : float, optional
        Radius in mm of the closing ball (default 6 mm).
    dilation_mm : float, optional
        Final dilation radius in mm (default 2 mm).

    Returns
    -------
    numpy.ndarray of bool
        Mask on the input grid.
    """
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    voxel_size = np.asarray(voxel_size, dtype=float)
    factors = block_factors(voxel_size, working_resolution_mm)
    coarse = block_reduce(image, factors)
    coarse_vox = voxel_size * np.asarray(factors)
    sigma = smoothing_mm / 2.3548 / coarse_vox
    coarse = ndimage.gaussian_filter(coarse, sigma, mode="nearest")
    if not np.ptp(coarse) > 0:
        return np.ones(image.shape, dtype=bool)
    mask = _close_and_fill(coarse > threshold_otsu(coarse), closing_mm, coarse_vox)
    if dilation_mm > 0:
        dist = ndimage.distance_transform_edt(~mask, sampling=coarse_vox)
        mask = dist <= dilation_mm
    # back to the input grid (nearest neighbour: voxel i lies in coarse block i // f)
    return upsample_nearest(mask, factors, image.shape)


def _close_and_fill(mask, closing_mm, voxel_size):
    """Closing with a ball of ``closing_mm`` (zero-padded so the edges do not erode),
    hole filling in 3D and slice by slice along each axis, largest component."""
    if closing_mm > 0:
        ball = ball_mm(closing_mm, voxel_size, tolerance_mm2=1e-9)
        pad = [(s // 2 + 1,) * 2 for s in ball.shape]
        mask = ndimage.binary_closing(np.pad(mask, pad), structure=ball)
        mask = mask[tuple(slice(p[0], -p[1]) for p in pad)]
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        mask = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)],
                        axis=0)
        mask = np.moveaxis(mask, 0, axis)
    labels, n_labels = ndimage.label(mask)
    if n_labels > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == np.argmax(sizes)
    return mask
