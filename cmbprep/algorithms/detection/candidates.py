"""Candidate seeds of the default detector: relative intensity, multi-scale dark-blob
response and local maxima.

Everything here works in the stored voxel order of the image; physical sizes are in
millimetres and are converted to voxels with ``voxel_size`` (read from the header).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import block_reduce, sigma_voxels, upsample_linear

__all__ = [
    "local_maxima",
    "multiscale_dark_blobness",
    "relative_intensity",
]


def relative_intensity(image, brain_mask, *, background_mm=None, voxel_size=None):
    """Image divided by a reference brain intensity.

    Parameters
    ----------
    image : ndarray
        SWI (bias corrected).
    brain_mask : ndarray of bool
        Brain voxels.
    background_mm : float or None, optional
        If given, divide by a masked Gaussian-smoothed local background (standard
        deviation in mm) instead of the global brain median; the local estimate is
        computed from voxels brighter than half the median (dark lesions and veins do
        not pull it down).
    voxel_size : tuple of float, optional
        Needed with ``background_mm``.

    Returns
    -------
    ndarray of float32
        1 for typical brain tissue, < 1 for dark structures.
    """
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain_mask, dtype=bool)
    if not brain.any():
        raise ValueError("brain mask is empty")
    median = float(np.median(image[brain]))
    if median <= 0:
        raise ValueError("median brain intensity is not positive")
    if background_mm is None:
        return image / median
    # the background is smooth: compute it on blocks of about background_mm / 4
    factors = [max(1, int(background_mm / 4.0 / v)) for v in voxel_size]
    weight = (brain & (image > 0.5 * median)).astype(np.float32)
    num = block_reduce(image * weight, factors, "mean", dtype=np.float32)
    den = block_reduce(weight, factors, "mean", dtype=np.float32)
    sigma = [background_mm / (v * f) for v, f in zip(voxel_size, factors)]
    num = ndi.gaussian_filter(num, sigma, mode="constant")
    den = ndi.gaussian_filter(den, sigma, mode="constant")
    small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), median).astype(np.float32)
    local = upsample_linear(small, factors, image.shape)
    local = np.where(local > 0.2 * median, local, median)
    return (image / local).astype(np.float32)


def multiscale_dark_blobness(image, voxel_size, sigmas_mm):
    """Scale-normalised Laplacian-of-Gaussian response to dark blobs.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        Relative intensity image (tissue about 1).
    voxel_size : tuple of 3 float
        Voxel size in mm.
    sigmas_mm : sequence of float
        Gaussian standard deviations in mm. A dark sphere of apparent radius ``r``
        responds most at ``sigma = r / sqrt(3)``.

    Returns
    -------
    blobness : ndarray of float32
        ``max_s sigma_s**2 * LoG_s(image)``; positive at the centre of dark blobs, with
        the depth of the blob as its natural scale (a deep sphere gives about 0.5-1).
    best_sigma_mm : ndarray of float32
        Scale (mm) of the maximum.
    """
    image = np.asarray(image, dtype=np.float32)
    blobness = np.full(image.shape, -np.inf, dtype=np.float32)
    best = np.zeros(image.shape, dtype=np.float32)
    # scale space built incrementally (G_s2 = G_inc * G_s1), Laplacian by central
    # differences in mm: one separable smoothing with a short kernel per scale instead
    # of three second-derivative filters with the full kernel
    smoothed = image
    previous = 0.0
    for sigma_mm in sorted(float(x) for x in sigmas_mm):
        increment = np.sqrt(sigma_mm**2 - previous**2)
        smoothed = ndi.gaussian_filter(smoothed, sigma_voxels(increment, voxel_size),
                                       mode="nearest")
        previous = sigma_mm
        response = _laplacian(smoothed, voxel_size)
        response *= np.float32(sigma_mm**2)
        better = response > blobness
        blobness[better] = response[better]
        best[better] = sigma_mm
    return blobness, best


def _laplacian(image, voxel_size):
    """Discrete Laplacian (central differences, mm units, edges replicated)."""
    out = np.zeros(image.shape, dtype=np.float32)
    for axis, h in enumerate(voxel_size):
        padded = np.pad(image, [(1, 1) if a == axis else (0, 0) for a in range(image.ndim)],
                        mode="edge")
        lo = [slice(None)] * image.ndim
        mid = [slice(None)] * image.ndim
        hi = [slice(None)] * image.ndim
        lo[axis], mid[axis], hi[axis] = slice(0, -2), slice(1, -1), slice(2, None)
        out += (padded[tuple(lo)] - 2 * padded[tuple(mid)] + padded[tuple(hi)]) * \
            np.float32(1.0 / (h * h))
    return out


def local_maxima(response, mask, voxel_size, *, min_separation_mm, threshold):
    """Voxel indices of local maxima of ``response`` inside ``mask`` above ``threshold``.

    Parameters
    ----------
    response : ndarray
    mask : ndarray of bool
    voxel_size : tuple of float
        mm.
    min_separation_mm : float
        Half-width (mm) of the box in which a maximum must be the largest value.
    threshold : float

    Returns
    -------
    (N, 3) ndarray of int
        Sorted by decreasing response.
    """
    size = [max(1, 2 * int(round(min_separation_mm / v)) + 1) for v in voxel_size]
    filtered = ndi.maximum_filter(response, size=size, mode="nearest")
    peaks = (response == filtered) & mask & (response > threshold)
    # a plateau (equal values, e.g. a clipped or constant region) is one maximum
    labels, n = ndi.label(peaks, structure=np.ones((3,) * response.ndim, bool))
    if n < peaks.sum():
        flat = labels.ravel()
        first = np.unique(flat, return_index=True)[1][1:]  # first voxel of each plateau
        peaks = np.zeros(peaks.size, bool)
        peaks[first] = True
        peaks = peaks.reshape(labels.shape)
    coords = np.argwhere(peaks)
    order = np.argsort(-response[tuple(coords.T)], kind="stable")
    return coords[order]
