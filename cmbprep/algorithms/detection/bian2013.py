"""The reference detector of Bian et al. (2013), with its parameters in mm.

The semi-automated method used by the ITP study (Bian et al. 2013, NeuroImage: Clinical
2:282; Morrison et al. 2018, NeuroImage: Clinical 20:498, the public ``CMB_labeler``):
the SWI is rescaled to 0-255, a 2D fast radial symmetry transform (FRST) of its
minimum-intensity projection (mIP) proposes seeds, elongated FRST traces form a vessel
mask, each remaining seed is grown in 3D on the SWI, geometric rules keep round,
compact, non-travelling regions, candidates no darker than the noise are removed
(denoising) and each candidate is segmented by a local threshold for its volume. Its
``cmb`` and ``review`` candidates are meant for a rater. Every step and the conversion of
the published pixel values to mm are described in ``docs/detection.rst``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import bounding_box, slice_axis
from .features import contour_circularity, shape_features, slice_features
from .frst import fast_radial_symmetry, fast_radial_symmetry_slices
from .parameters import BIAN2013_PARAMETERS, DETECTOR_VERSION
from .result import (
    DetectionResult,
    candidate_frame,
    check_inputs,
    jsonable,
    voxel_size_tuple,
)
from .segmentation import grow_region, segment_dark_lesion

__all__ = ["detect_bian2013", "frst_seeds", "frst_vessel_mask", "noise_sigma",
           "reference_response", "rescale_255", "rule_status"]


def rescale_255(swi, minip, brain, tissue_level):
    """SWI and mIP on one 0-255 scale: one factor maps the brain median of the SWI to
    ``tissue_level`` (values clipped to 0-255). The mIP is the minimum of SWI values, so
    the same factor keeps every threshold meaning the same on both images.

    Returns
    -------
    swi255, minip255 : ndarray of float32
    factor : float
    """
    median = float(np.median(swi[brain]))
    if median <= 0:
        median = float(np.max(swi[brain])) or 1.0
    factor = tissue_level / median
    swi255 = np.clip(np.asarray(swi, np.float32) * factor, 0, 255).astype(np.float32)
    minip255 = np.clip(np.asarray(minip, np.float32) * factor, 0, 255).astype(np.float32)
    return swi255, minip255, factor


def noise_sigma(image, brain):
    """Robust standard deviation of the voxel noise inside the brain.

    The image minus its 3x3x3 mean, scaled for the mean's own share of the noise; the
    median absolute deviation (times 1.4826) ignores edges and lesions.
    """
    image = np.asarray(image, dtype=np.float32)
    inner = ndi.binary_erosion(brain, iterations=2)
    if inner.sum() < 100:
        inner = brain
    residual = (image - ndi.uniform_filter(image, 3, mode="nearest"))[inner]
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return 1.4826 * mad * np.sqrt(27.0 / 26.0) or 1e-6


def _radii_px(radii_mm, in_plane):
    radii = [r / in_plane for r in radii_mm if r / in_plane >= 1.0]
    return radii or [1.0]


def reference_response(radii_px, pixel_size, p):
    """FRST response at the centre of the faintest, smallest lesion a seed must match.

    A disc of diameter ``reference_diameter_mm`` whose depth below ``tissue_level`` is
    ``tissue_level - max_seed_intensity`` (a lesion just dark enough to be a seed),
    digitised on the scan's pixel grid (area-weighted partial volume) and transformed
    like the mIP slices.
    """
    pixel_size = np.asarray(pixel_size, dtype=float)
    radius = 0.5 * p["reference_diameter_mm"]
    half = [int(np.ceil((radius + 2 * max(p["frst_radii_mm"])) / v)) + 2 for v in pixel_size]
    sub = 8
    axes = [(np.arange((2 * h + 1) * sub) + 0.5) / sub - 0.5 - h for h in half]
    yy, xx = np.meshgrid(axes[0] * pixel_size[0], axes[1] * pixel_size[1], indexing="ij")
    inside = (yy**2 + xx**2 <= radius**2).astype(float)
    fraction = inside.reshape(2 * half[0] + 1, sub, 2 * half[1] + 1, sub).mean(axis=(1, 3))
    depth = p["tissue_level"] - p["max_seed_intensity"]
    image = p["tissue_level"] - depth * fraction
    response = fast_radial_symmetry(image, radii_px, alpha=p["frst_alpha"],
                                    combine=p["frst_combine"])
    return float(response[half[0], half[1]])


def frst_vessel_mask(frst, cut, axis, pixel_size, p):
    """Vessel mask from the FRST map (``FRST_Vessel_mask`` of CMB_labeler).

    On every slice, the connected parts (8-neighbourhood) of ``frst > cut`` whose area is
    at least ``vessel_min_area_mm2`` and whose circularity (:func:`.contour_circularity`)
    is below ``min_circularity``: a vessel lying in the projection leaves a long trace of
    symmetry votes along its centre line, a microbleed a compact peak.
    """
    above = frst > cut
    structure = np.zeros((3, 3, 3), bool)
    np.moveaxis(structure, axis, 0)[1] = True  # 8-neighbourhood within each slice
    labels, n = ndi.label(above, structure=structure)
    mask = np.zeros(above.shape, bool)
    if n == 0:
        return mask
    pixel_area = float(np.prod(pixel_size))
    areas = np.bincount(labels.ravel(), minlength=n + 1) * pixel_area
    big = np.nonzero(areas >= p["vessel_min_area_mm2"])[0]
    big = big[big > 0]
    objects = ndi.find_objects(labels)
    for lab in big:
        box = objects[lab - 1]
        comp = labels[box] == lab
        comp2d = np.moveaxis(comp, axis, 0)[0]
        if contour_circularity(comp2d, pixel_size) < p["min_circularity"]:
            mask[box] |= comp
    return mask


def frst_seeds(minip, brain, radii_px, axis, pixel_size, p):
    """Seeds: local maxima of the slice-wise FRST of the (0-255) mIP.

    Returns
    -------
    frst : ndarray of float64
        FRST response, mean over ``radii_px`` (0 outside the brain).
    seeds : (N, 3) ndarray of int
        In-plane local maxima above the ``frst_percentile`` of the brain and above
        ``reference_fraction`` times :func:`reference_response`, outside the vessel mask, on pixels not brighter than ``max_seed_intensity``, by decreasing
        response.
    top : float
        99.9th brain percentile of the response (the score's scale).
    vessels : ndarray of bool
        :func:`frst_vessel_mask`.
    """
    frst = fast_radial_symmetry_slices(minip, radii_px, slice_axis=axis,
                                       alpha=p["frst_alpha"], combine=p["frst_combine"])
    frst = np.where(brain, frst, 0.0)
    cut = max(float(np.percentile(frst[brain], p["frst_percentile"])),
              p["reference_fraction"] * reference_response(radii_px, pixel_size, p))
    top = float(np.percentile(frst[brain], 99.9)) or 1.0
    vessels = frst_vessel_mask(frst, cut, axis, pixel_size, p)
    separation = [max(1, int(round(min(radii_px))))] * 3
    separation[axis] = 0
    size = [2 * s + 1 for s in separation]
    peaks = (frst == ndi.maximum_filter(frst, size=size)) & (frst > cut) & brain
    peaks &= (minip <= p["max_seed_intensity"]) & ~vessels
    seeds = np.argwhere(peaks)
    seeds = seeds[np.argsort(-frst[tuple(seeds.T)], kind="stable")]
    return frst, seeds, top, vessels


def _darkest_in_slab(swi, seed, axis, half_slab):
    """The darkest SWI voxel of the projection slab behind a seed (one pixel either side
    in-plane): the mIP pixel stands for the darkest voxel of its slab."""
    reach = [1, 1, 1]
    reach[axis] = half_slab
    near = tuple(slice(max(s - r, 0), min(s + r + 1, n))
                 for s, r, n in zip(seed, reach, swi.shape))
    sub = np.unravel_index(np.argmin(swi[near]), swi[near].shape)
    return tuple(int(n.start + s) for n, s in zip(near, sub))


def rule_status(geom, p):
    """Status, failed rules and Morrison category of a candidate.

    Rules (each failure named in ``reason``, ``+``-joined; ``n/a`` when none):
    ``noise`` (denoising: fewer than 2 voxels, a volume below ``min_volume_mm3``, or a
    depth below ``min_contrast_to_noise`` times the noise standard deviation), ``area`` (largest slice area above ``max_slice_area_mm2``),
    ``circularity`` (below ``min_circularity`` on the largest slice), ``n_slices``
    (through-plane extent ``n_slices * slice thickness`` above ``max_through_plane_ratio``
    times the in-plane equivalent diameter plus one slice: a vessel crossing the slices)
    ``centroid_shift`` (above ``max_centroid_shift_mm`` between consecutive slices, or
    ``centroid_shift_pixels`` in-plane pixels if that is more: the published 0.5 px is
    a digitisation tolerance) and ``travel`` (a shift above ``max_travel_radii`` times
    the in-plane equivalent radius, and above one pixel: an oblique vessel). ``geom``: :func:`.slice_features` plus
    ``contrast_to_noise``, ``n_voxels``, ``volume_mm3`` (grown region) and ``pixel_mm``.

    ``cmb`` when every rule passes, ``review`` when only the centroid-shift rule fails
    (Morrison et al.'s "travelling" candidates, shown to the rater), ``rejected``
    otherwise. The category is ``single_slice`` (one slice), ``travelling`` (the
    centroid-shift rule fails) or ``possible`` (a possible microbleed or hard mimic).
    """
    fails = []
    if (geom["contrast_to_noise"] < p["min_contrast_to_noise"]
            or geom["n_voxels"] < 2 or geom["volume_mm3"] < p["min_volume_mm3"]):
        fails.append("noise")
    if geom["max_slice_area_mm2"] > p["max_slice_area_mm2"]:
        fails.append("area")
    if not geom["circularity"] >= p["min_circularity"]:
        fails.append("circularity")
    thickness = geom["slice_extent_mm"] / geom["n_slices"]
    in_plane_diameter = 2.0 * np.sqrt(geom["max_slice_area_mm2"] / np.pi)
    if geom["slice_extent_mm"] > p["max_through_plane_ratio"] * in_plane_diameter + thickness:
        fails.append("n_slices")
    shift_limit = max(p["max_centroid_shift_mm"],
                      p["centroid_shift_pixels"] * geom["pixel_mm"])
    travelling = geom["centroid_shift_mm"] > shift_limit
    if travelling:
        fails.append("centroid_shift")
        # consecutive sections of one round lesion are concentric: a shift beyond the
        # lesion's own in-plane radius (and beyond one pixel) is a vessel crossing the
        # slices obliquely, not a "travelling" microbleed worth a rater's look
        if geom["centroid_shift_mm"] > p["max_travel_radii"] * max(
                0.5 * in_plane_diameter, geom["pixel_mm"]):
            fails.append("travel")
    if not fails:
        status = "cmb"
    elif fails == ["centroid_shift"]:
        status = "review"
    else:
        status = "rejected"
    if geom["n_slices"] == 1:
        category = "single_slice"
    elif travelling:
        category = "travelling"
    else:
        category = "possible"
    return status, "+".join(fails) if fails else "n/a", category


def detect_bian2013(swi, minip, brain_mask, affine, *, parameters=None):
    """Reference detector of Bian et al. (2013) and Morrison et al. (2018), in mm.

    Parameters
    ----------
    swi, minip : (X, Y, Z) ndarray
        SWI and its sliding-slab minimum-intensity projection (same grid).
    brain_mask : (X, Y, Z) ndarray of bool
    affine : (4, 4) array_like
        Voxel-to-scanner-RAS affine (voxel sizes and slice axis come from it).
    parameters : dict, optional
        Overrides of :data:`.parameters.BIAN2013_PARAMETERS`.

    Returns
    -------
    DetectionResult
        One row per grown seed. Status, reason and ``category`` from
        :func:`rule_status`; ``volume_mm3``/``diameter_mm`` and the label image from the
        local-threshold segmentation (Morrison et al. 2018); the rule features from the
        grown region; score: FRST response at the seed over its 99.9th brain percentile
        (at most 1).
    """
    p = dict(BIAN2013_PARAMETERS)
    p.update(parameters or {})
    swi, brain, affine = check_inputs(swi, brain_mask, affine)
    minip = np.asarray(minip)
    if minip.shape != swi.shape:
        raise ValueError(f"minIP shape {minip.shape} differs from SWI shape {swi.shape}")
    voxel_size = voxel_size_tuple(affine)
    axis = slice_axis(affine)
    pixel_size = tuple(np.delete(np.asarray(voxel_size), axis))
    in_plane = float(np.mean(pixel_size))
    half_slab = max(0, int(round(p["minip_slab_mm"] / voxel_size[axis])) // 2)

    box = bounding_box(brain, margin_vox=(2, 2, 2))
    brain_c = brain[box]
    swi_c, minip_c, _ = rescale_255(swi[box], minip[box], brain_c, p["tissue_level"])
    sigma = noise_sigma(swi_c, brain_c)
    radii = _radii_px(p["frst_radii_mm"], in_plane)
    frst, seeds, top, _ = frst_seeds(minip_c, brain_c, radii, axis, pixel_size, p)
    offset = np.array([b.start for b in box])
    grown = np.zeros(brain_c.shape, dtype=bool)
    labels_c = np.zeros(brain_c.shape, dtype=np.int32)
    rows = []
    for seed in seeds:
        start = _darkest_in_slab(swi_c, seed, axis, half_slab)
        if grown[start] or swi_c[start] > p["max_seed_intensity"]:
            continue
        region, rbox = grow_region(
            swi_c, start, voxel_size,
            lower=0.0, upper=p["growing_upper"],
            max_difference=p["growing_max_difference"],
            max_distance_mm=p["growing_max_distance_mm"], mask=brain_c,
            darker_joins=True,
        )
        if grown[rbox][region].any():
            continue  # part of a structure grown from an earlier (stronger) seed
        grown[rbox] |= region
        geom = slice_features(region, rbox, voxel_size, axis, circularity="contour")
        lesion, lbox, background, darkest, _, _ = segment_dark_lesion(
            swi_c, start, voxel_size, patch_radius_mm=p["segmentation_patch_mm"],
            depth_fraction=p["segmentation_depth_fraction"])
        lesion &= _on_box(lbox, rbox, region)
        if not lesion.any():
            lesion, lbox = region, rbox
        geom["contrast_to_noise"] = float((background - darkest) / sigma)
        geom["n_voxels"] = int(region.sum())
        geom["volume_mm3"] = float(region.sum() * np.prod(voxel_size))
        geom["pixel_mm"] = in_plane
        status, reason, category = rule_status(geom, p)
        cid = len(rows) + 1
        free = lesion & (labels_c[lbox] == 0)
        labels_c[lbox][free] = cid
        shape = shape_features(lesion, lbox, voxel_size, surface=False)
        rows.append({
            "candidate_id": cid,
            "centroid": shape["centroid_vox"] + offset,
            "frst": float(frst[tuple(seed)]),
            "seed_intensity": float(swi_c[start]),
            "volume_mm3": shape["volume_mm3"],
            "diameter_mm": shape["diameter_mm"],
            "grown_volume_mm3": geom["volume_mm3"],
            "max_slice_area_mm2": geom["max_slice_area_mm2"],
            "circularity": geom["circularity"],
            "centroid_shift_mm": geom["centroid_shift_mm"],
            "n_slices": geom["n_slices"],
            "contrast_to_noise": geom["contrast_to_noise"],
            "category": category,
            "score": float(min(frst[tuple(seed)] / top, 1.0)),
            "status": status,
            "reason": reason,
        })
    labels = np.zeros(swi.shape, dtype=np.int32)
    labels[box] = labels_c
    table = candidate_frame(rows, affine)
    params = {"detector": "bian2013", "version": DETECTOR_VERSION["bian2013"],
              "slice_axis": axis, "frst_radii_px": [float(r) for r in radii],
              "noise_sigma_255": float(sigma), "n_seeds": int(len(seeds)), **jsonable(p)}
    return DetectionResult(table, labels, params)


def _on_box(target_box, source_box, source):
    """``source`` (a mask inside ``source_box``) on the grid of ``target_box`` (False
    where the boxes do not overlap)."""
    out = np.zeros(tuple(b.stop - b.start for b in target_box), bool)
    lo = [max(t.start, s.start) for t, s in zip(target_box, source_box)]
    hi = [min(t.stop, s.stop) for t, s in zip(target_box, source_box)]
    if any(h <= a for a, h in zip(lo, hi)):
        return out
    tsl = tuple(slice(a - t.start, b - t.start) for a, b, t in zip(lo, hi, target_box))
    ssl = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo, hi, source_box))
    out[tsl] = source[ssl]
    return out
