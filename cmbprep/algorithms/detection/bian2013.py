"""The reference detector of Bian et al. (2013), with its parameters in mm.

The semi-automated method used by the ITP study (Bian et al. 2013, NeuroImage: Clinical
2:282; Morrison et al. 2018, NeuroImage: Clinical 20:498): 2D fast radial symmetry
transform on the minimum-intensity projection, 3D region growing, geometric rules. Its
candidates are meant for a rater.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import bounding_box, slice_axis
from .features import shape_features, slice_features
from .frst import fast_radial_symmetry_slices
from .parameters import BIAN2013_PARAMETERS, DETECTOR_VERSION
from .result import (
    DetectionResult,
    candidate_frame,
    check_inputs,
    jsonable,
    voxel_size_tuple,
)
from .segmentation import grow_region

__all__ = ["detect_bian2013", "frst_seeds", "rule_status"]


def _rescale_255(image, brain, percentile):
    """Map 0 to 0 and the given brain percentile to 255 (as an 8-bit display would)."""
    high = float(np.percentile(image[brain], percentile))
    if high <= 0:
        high = float(image[brain].max()) or 1.0
    return np.clip(image / high * 255.0, 0, 255).astype(np.float32)


def frst_seeds(minip, brain, radius_px, slice_axis, p):
    """Seeds: local maxima of the slice-wise FRST of the (0-255) minIP.

    Returns
    -------
    frst : ndarray of float64
        FRST response (0 outside the brain).
    seeds : (N, 3) ndarray of int
        Peaks above the ``frst_percentile`` of the brain, on pixels not brighter than
        ``max_seed_intensity``, by decreasing response.
    top : float
        99.9th brain percentile of the response (the score's scale).
    """
    frst = fast_radial_symmetry_slices(minip, radius_px, slice_axis=slice_axis,
                                       alpha=p["frst_alpha"])
    frst = np.where(brain, frst, 0.0)
    cut = float(np.percentile(frst[brain], p["frst_percentile"]))
    top = float(np.percentile(frst[brain], 99.9)) or 1.0
    separation = [max(1, int(round(radius_px)))] * 3
    separation[slice_axis] = 1
    size = [2 * s + 1 for s in separation]
    peaks = (frst == ndi.maximum_filter(frst, size=size)) & (frst > cut) & brain
    peaks &= minip <= p["max_seed_intensity"]
    seeds = np.argwhere(peaks)
    seeds = seeds[np.argsort(-frst[tuple(seeds.T)], kind="stable")]
    return frst, seeds, top


def _darkest_near(swi, seed):
    """The darkest SWI voxel one slice either side (and one pixel in-plane) of a seed:
    the minIP pixel stands for the darkest voxel of its slab."""
    near = tuple(slice(max(s - 1, 0), min(s + 2, n)) for s, n in zip(seed, swi.shape))
    sub = np.unravel_index(np.argmin(swi[near]), swi[near].shape)
    return tuple(int(n.start + s) for n, s in zip(near, sub))


def rule_status(geom, p):
    """Status and failed rules of a candidate from its slice geometry.

    ``cmb`` when every rule passes, ``review`` when only the centroid-shift rule fails
    ("travelling" candidates of Morrison et al. 2018, shown to the rater), ``rejected``
    otherwise; the reason is the ``+``-joined failed rules (``n/a`` when none).
    """
    fails = []
    if geom["max_slice_area_mm2"] > p["max_slice_area_mm2"]:
        fails.append("area")
    if geom["circularity"] < p["min_circularity"]:
        fails.append("circularity")
    if geom["centroid_shift_mm"] > p["max_centroid_shift_mm"]:
        fails.append("centroid_shift")
    if not fails:
        status = "cmb"
    elif fails == ["centroid_shift"]:
        status = "review"
    else:
        status = "rejected"
    return status, "+".join(fails) if fails else "n/a"


def detect_bian2013(swi, minip, brain_mask, affine, *, parameters=None):
    """Reference detector of Bian et al. (2013), parameters expressed in mm.

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
        Status from :func:`rule_status`; score: FRST response at the seed over its
        99.9th brain percentile (at most 1).
    """
    p = dict(BIAN2013_PARAMETERS)
    p.update(parameters or {})
    swi, brain, affine = check_inputs(swi, brain_mask, affine)
    minip = np.asarray(minip)
    if minip.shape != swi.shape:
        raise ValueError(f"minIP shape {minip.shape} differs from SWI shape {swi.shape}")
    voxel_size = voxel_size_tuple(affine)
    axis = slice_axis(affine)
    in_plane = float(np.mean(np.delete(voxel_size, axis)))

    box = bounding_box(brain, margin_vox=(2, 2, 2))
    brain_c = brain[box]
    swi_c = _rescale_255(
        np.asarray(swi[box], dtype=np.float32), brain_c, p["intensity_percentile"]
    )
    minip_c = _rescale_255(
        np.asarray(minip[box], dtype=np.float32), brain_c, p["intensity_percentile"]
    )
    frst, seeds, top = frst_seeds(minip_c, brain_c, p["frst_radius_mm"] / in_plane,
                                  axis, p)
    offset = np.array([b.start for b in box])
    labels_c = np.zeros(brain_c.shape, dtype=np.int32)
    rows = []
    for seed in seeds:
        start = _darkest_near(swi_c, seed)
        if labels_c[start] or swi_c[start] > p["max_seed_intensity"]:
            continue
        region, rbox = grow_region(
            swi_c, start, voxel_size,
            lower=p["growing_lower"], upper=p["growing_upper"],
            max_difference=p["growing_max_difference"],
            max_distance_mm=p["growing_max_distance_mm"], mask=brain_c,
        )
        region &= labels_c[rbox] == 0
        if not region.any():
            continue
        cid = len(rows) + 1
        labels_c[rbox][region] = cid
        geom = slice_features(region, rbox, voxel_size, axis)
        shape = shape_features(region, rbox, voxel_size)
        status, reason = rule_status(geom, p)
        rows.append({
            "candidate_id": cid,
            "centroid": shape["centroid_vox"] + offset,
            "frst": float(frst[tuple(seed)]),
            "seed_intensity": float(swi_c[start]),
            "volume_mm3": shape["volume_mm3"],
            "diameter_mm": shape["diameter_mm"],
            "max_slice_area_mm2": geom["max_slice_area_mm2"],
            "circularity": geom["circularity"],
            "centroid_shift_mm": geom["centroid_shift_mm"],
            "n_slices": geom["n_slices"],
            "score": float(min(frst[tuple(seed)] / top, 1.0)),
            "status": status,
            "reason": reason,
        })
    labels = np.zeros(swi.shape, dtype=np.int32)
    labels[box] = labels_c
    table = candidate_frame(rows, affine)
    params = {"detector": "bian2013", "version": DETECTOR_VERSION["bian2013"],
              "slice_axis": axis, **jsonable(p)}
    return DetectionResult(table, labels, params)
