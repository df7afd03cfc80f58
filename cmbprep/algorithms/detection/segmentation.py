"""Lesion segmentation around a seed voxel: region growing (Bian et al. 2013) and the
local half-depth threshold of the default detector.

Physical sizes are in millimetres and are converted to voxels with ``voxel_size``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import ball_mm, box_around

__all__ = ["grow_region", "segment_dark_lesion"]

_STRUCTURE = np.ones((3, 3, 3), bool)  # 26-neighbourhood


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
    darker_joins=False,
):
    """Region growing from a seed voxel (26-connected), bounded in intensity and distance.

    A voxel joins when its intensity lies in ``[lower, upper]``, differs from the seed
    intensity by at most ``max_difference``, lies within ``max_distance_mm`` of the
    seed and is connected to the seed through such voxels. With ``darker_joins`` (dark
    lesions: ``bian2013``) every voxel darker than the seed joins whatever ``lower`` and
    ``max_difference`` say (only brighter voxels are bounded, by ``upper`` and by
    ``seed + max_difference``), so a seed in the dark core of a vessel grows along the
    vessel instead of staying an isolated voxel.

    Returns
    -------
    region : ndarray of bool
        Region within the box ``box``.
    box : tuple of slice
        Where ``region`` sits in ``image``.
    """
    seed = tuple(int(s) for s in seed)
    radius_vox = [int(np.ceil(max_distance_mm / v)) for v in voxel_size]
    box = box_around(seed, radius_vox, image.shape)
    patch = np.asarray(image[box], dtype=np.float32)
    local_seed = tuple(s - b.start for s, b in zip(seed, box))
    grids = np.meshgrid(
        *[(np.arange(b.start, b.stop) - s) * v for b, s, v in zip(box, seed, voxel_size)],
        indexing="ij",
    )
    distance = np.sqrt(sum(g**2 for g in grids))
    seed_value = patch[local_seed]
    if darker_joins:
        allowed = (patch <= min(upper, seed_value + max_difference)) | (patch <= seed_value)
    else:
        allowed = (
            (patch >= lower)
            & (patch <= upper)
            & (np.abs(patch - seed_value) <= max_difference)
        )
    allowed &= distance <= max_distance_mm
    if mask is not None:
        allowed &= np.asarray(mask[box], dtype=bool)
    allowed[local_seed] = True
    labels, _ = ndi.label(allowed, structure=_STRUCTURE)
    return labels == labels[local_seed], box


def _touches_border(region):
    """Whether a region reaches a face of its (3D) patch."""
    return bool(
        region[0].any() or region[-1].any() or region[:, 0].any()
        or region[:, -1].any() or region[:, :, 0].any() or region[:, :, -1].any()
    )


def _region_at_depth(patch, start, near, background, darkest, fraction, ball):
    """Region connected to ``start`` darker than ``fraction`` of the lesion depth.

    With a ``ball`` (structuring element of more than one voxel) the region is opened
    and only the opened parts meeting ``near`` are kept (the unopened region if none).

    Returns
    -------
    region : ndarray of bool
    touches : bool
        Whether the region reaches the patch border.
    """
    level = background - fraction * (background - darkest)
    dark = patch <= level
    dark[start] = True
    labels, _ = ndi.label(dark, structure=_STRUCTURE)
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
            lab[crop], _ = ndi.label(opened[crop], structure=_STRUCTURE)
            keep = np.unique(lab[near][opened[near]])
            region = np.isin(lab, keep[keep > 0])
    return region, _touches_border(region)


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
    box = box_around(seed, radius_vox, image.shape)
    patch = np.asarray(image[box], dtype=np.float32)
    local_seed = tuple(s - b.start for s, b in zip(seed, box))
    near = box_around(local_seed, (1, 1, 1), patch.shape)
    darkest = float(patch[near].min())
    background = float(np.median(patch))
    sub = np.unravel_index(np.argmin(patch[near]), patch[near].shape)
    start = tuple(n.start + s for n, s in zip(near, sub))
    ball = (ball_mm(opening_radius_mm, voxel_size, tolerance_mm2=0.0)
            if opening_radius_mm > 0 else None)

    def at_level(fraction, ball=ball):
        return _region_at_depth(patch, start, near, background, darkest, fraction, ball)

    region, touches = at_level(depth_fraction)
    attached_depth_ratio = 0.0
    if shallow_fraction is not None:
        shallow, touches_shallow = at_level(shallow_fraction, ball=None)
        if touches_shallow:
            attached = shallow & ~ndi.binary_dilation(region, structure=_STRUCTURE)
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
