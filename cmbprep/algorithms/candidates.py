"""Candidate generation and lesion segmentation for microbleed detection.

Everything here works in the stored voxel order of the image; physical sizes are in
millimetres and are converted to voxels with ``voxel_size`` (read from the header).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .mip import voxel_sizes

__all__ = [
    "b0_direction_in_voxels",
    "brain_bounding_box",
    "grow_region",
    "local_maxima",
    "multiscale_dark_blobness",
    "relative_intensity",
    "segment_dark_lesion",
    "slice_axis_from_affine",
    "voxel_size_from_affine",
]


def voxel_size_from_affine(affine):
    """Voxel edge lengths (mm) from a 4x4 voxel-to-world affine, as a tuple."""
    return tuple(float(v) for v in voxel_sizes(affine))


def slice_axis_from_affine(affine):
    """Array axis taken as the slice-select axis.

    The thickest voxel axis when voxels are anisotropic (more than 10 % thicker than
    the thinnest), otherwise the array axis most aligned with the scanner z (head-foot,
    B0) axis, i.e. axial slices.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-scanner-RAS affine.

    Returns
    -------
    int
    """
    affine = np.asarray(affine, dtype=float)
    sizes = np.asarray(voxel_size_from_affine(affine))
    if sizes.max() > 1.1 * sizes.min():
        return int(np.argmax(sizes))
    directions = affine[:3, :3] / sizes
    return int(np.argmax(np.abs(directions[2])))


def b0_direction_in_voxels(affine):
    """Unit vector of the scanner z axis (B0) expressed along the array axes (mm).

    Returns the components, in millimetres per millimetre, of the scanner z direction
    along each array axis' physical direction (the rows of the orthonormal part of the
    affine). Used to orient dipole templates.
    """
    affine = np.asarray(affine, dtype=float)
    sizes = np.asarray(voxel_size_from_affine(affine))
    directions = affine[:3, :3] / sizes  # columns: unit vectors of array axes in RAS
    return directions[2].copy()  # z-component of each axis direction


def brain_bounding_box(mask, margin_vox=(0, 0, 0)):
    """Tuple of slices bounding the non-zero part of ``mask`` plus a margin."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.nonzero(mask.any(axis=other))[0]
        start = max(int(present[0]) - int(margin_vox[axis]), 0)
        stop = min(int(present[-1]) + 1 + int(margin_vox[axis]), mask.shape[axis])
        slices.append(slice(start, stop))
    return tuple(slices)


def _block_mean(array, factors):
    """Mean over blocks of ``factors`` voxels (edges padded by repetition)."""
    array = np.asarray(array, dtype=np.float32)
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    array = np.pad(array, pad, mode="edge")
    shape = []
    for n, f in zip(array.shape, factors):
        shape += [n // f, f]
    return array.reshape(shape).mean(axis=(1, 3, 5))


def _upsample(small, factors, shape):
    """Separable linear interpolation of a block-mean image back to the full grid."""
    out = np.asarray(small, dtype=np.float32)
    for axis, (n, f) in enumerate(zip(shape, factors)):
        if f == 1 and out.shape[axis] == n:
            continue
        coords = (np.arange(n, dtype=np.float32) + 0.5) / f - 0.5
        coords = np.clip(coords, 0, out.shape[axis] - 1)
        low = np.floor(coords).astype(np.intp)
        high = np.minimum(low + 1, out.shape[axis] - 1)
        weight = (coords - low).astype(np.float32)
        wshape = [1] * out.ndim
        wshape[axis] = n
        weight = weight.reshape(wshape)
        out = out.take(low, axis=axis) * (1 - weight) + out.take(high, axis=axis) * weight
    return out.astype(np.float32)


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
    num = _block_mean(image * weight, factors)
    den = _block_mean(weight, factors)
    sigma = [background_mm / (v * f) for v, f in zip(voxel_size, factors)]
    num = ndi.gaussian_filter(num, sigma, mode="constant")
    den = ndi.gaussian_filter(den, sigma, mode="constant")
    small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), median).astype(np.float32)
    local = _upsample(small, factors, image.shape)
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
        smoothed = ndi.gaussian_filter(smoothed, [increment / v for v in voxel_size],
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


def _box(center, radius_vox, shape):
    return tuple(
        slice(max(int(c) - int(r), 0), min(int(c) + int(r) + 1, n))
        for c, r, n in zip(center, radius_vox, shape)
    )


def grow_region(
    image,
    seed,
    voxel_size,
    *,
    lower,
    upper,
    max_difference,
    max_distance_mm,
    mask=None,
):
    """Region growing from a seed voxel (26-connected), bounded in intensity and distance.

    A voxel joins when its intensity lies in ``[lower, upper]``, differs from the seed
    intensity by at most ``max_difference``, lies within ``max_distance_mm`` of the
    seed and is connected to the seed through such voxels.

    Returns
    -------
    region : ndarray of bool
        Region within the box ``box``.
    box : tuple of slice
        Where ``region`` sits in ``image``.
    """
    seed = tuple(int(s) for s in seed)
    radius_vox = [int(np.ceil(max_distance_mm / v)) for v in voxel_size]
    box = _box(seed, radius_vox, image.shape)
    patch = np.asarray(image[box], dtype=np.float32)
    local_seed = tuple(s - b.start for s, b in zip(seed, box))
    grids = np.meshgrid(
        *[(np.arange(b.start, b.stop) - s) * v for b, s, v in zip(box, seed, voxel_size)],
        indexing="ij",
    )
    distance = np.sqrt(sum(g**2 for g in grids))
    seed_value = patch[local_seed]
    allowed = (
        (patch >= lower)
        & (patch <= upper)
        & (np.abs(patch - seed_value) <= max_difference)
        & (distance <= max_distance_mm)
    )
    if mask is not None:
        allowed &= np.asarray(mask[box], dtype=bool)
    allowed[local_seed] = True
    labels, _ = ndi.label(allowed, structure=np.ones((3, 3, 3), bool))
    return labels == labels[local_seed], box


def _ball(radius_mm, voxel_size):
    half = [int(np.floor(radius_mm / v)) for v in voxel_size]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * v for h, v in zip(half, voxel_size)],
                        indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def segment_dark_lesion(image, seed, voxel_size, *, patch_radius_mm, depth_fraction=0.5,
                        opening_radius_mm=0.0, deeper_fractions=(), shallow_fraction=None):
    """Segment a dark lesion around ``seed`` by a local half-depth threshold.

    The local background is the median of the patch (a cube of half-width
    ``patch_radius_mm``); the darkest value is the minimum in a 3x3x3 neighbourhood
    of the seed. Voxels darker than ``background - depth_fraction * (background -
    darkest)`` that are connected (26-neighbourhood) to the darkest voxel form the
    lesion. With ``opening_radius_mm > 0`` the region is opened with a ball of that
    radius (mm), which detaches thin vessels touching a round lesion; if nothing
    survives the opening near the seed, the unopened region is kept. When the
    region reaches the patch border, each of ``deeper_fractions`` (increasing) is
    tried in turn and the first region that stays inside the patch is kept: a very dark
    lesion touching a less dark vessel separates from it at a deeper level. With
    ``shallow_fraction`` the region grown at that (lower) depth fraction is also
    checked for reaching the patch border: a vessel seen as a chain of dark beads
    connects at a shallow level, an isolated lesion does not.

    Returns
    -------
    region : ndarray of bool
        Lesion inside ``box``.
    box : tuple of slice
    background : float
        Local background intensity.
    darkest : float
    touches_border : bool
        Whether the (opened) region reaches the patch border (typical of veins).
    attached_depth_ratio : float
        When the region at ``shallow_fraction`` reaches the patch border: depth of the
        darkest voxel of the structure attached to the lesion (outside the lesion
        dilated by one voxel) relative to the lesion depth; about 1 for a bead on a
        vessel, lower for a lesion darker than the vessel it touches. 0 otherwise.
    """
    seed = tuple(int(s) for s in seed)
    radius_vox = [max(2, int(np.ceil(patch_radius_mm / v))) for v in voxel_size]
    box = _box(seed, radius_vox, image.shape)
    patch = np.asarray(image[box], dtype=np.float32)
    local_seed = tuple(s - b.start for s, b in zip(seed, box))
    near = _box(local_seed, (1, 1, 1), patch.shape)
    darkest = float(patch[near].min())
    background = float(np.median(patch))
    sub = np.unravel_index(np.argmin(patch[near]), patch[near].shape)
    start = tuple(n.start + s for n, s in zip(near, sub))
    structure = np.ones((3, 3, 3), bool)
    ball = _ball(opening_radius_mm, voxel_size) if opening_radius_mm > 0 else None

    def at_level(fraction):
        level = background - fraction * (background - darkest)
        dark = patch <= level
        dark[start] = True
        labels, _ = ndi.label(dark, structure=structure)
        region = labels == labels[start]
        if ball is not None and ball.sum() > 1:
            # open only the region's bounding box plus the ball's reach (same result,
            # much less work for small regions in large patches)
            where = np.argwhere(region)
            reach = [n // 2 + 1 for n in ball.shape]
            crop = tuple(slice(max(lo - r, 0), min(hi + r + 1, n)) for lo, hi, r, n in
                         zip(where.min(0), where.max(0), reach, region.shape))
            opened = np.zeros_like(region)
            opened[crop] = ndi.binary_opening(region[crop], structure=ball)
            if opened[near].any():
                lab = np.zeros(region.shape, np.int32)
                lab[crop], _ = ndi.label(opened[crop], structure=structure)
                keep = np.unique(lab[near][opened[near]])
                region = np.isin(lab, keep[keep > 0])
        touches = bool(
            region[0].any() or region[-1].any() or region[:, 0].any()
            or region[:, -1].any() or region[:, :, 0].any() or region[:, :, -1].any()
        )
        return region, touches

    region, touches = at_level(depth_fraction)
    attached_depth_ratio = 0.0
    if shallow_fraction is not None:
        saved, ball = ball, None
        shallow, touches_shallow = at_level(shallow_fraction)
        ball = saved
        if touches_shallow:
            attached = shallow & ~ndi.binary_dilation(region, structure=structure)
            if attached.any() and background > darkest:
                attached_depth_ratio = float(
                    (background - patch[attached].min()) / (background - darkest))
    if touches:
        for fraction in deeper_fractions:
            deeper, deeper_touches = at_level(fraction)
            if not deeper_touches:
                region, touches = deeper, False
                break
    return region, box, background, darkest, touches, attached_depth_ratio
