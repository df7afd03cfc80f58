"""Second stage of the default (``cmbprep``) detector: segmentation and features of each
seed of a :class:`~.cmbprep_detector.CandidateContext`, every seed on its own (so any
subsets of the seeds can be analysed in separate processes)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..arrays import b0_direction
from .context import CONTEXT_FEATURES, context_features
from .features import (
    hessian_blob_ratio,
    shape_features,
    slice_features,
    surrounding_dark_fraction,
)
from .phase import dipole_correlation
from .segmentation import segment_dark_lesion

__all__ = ["CandidateAnalysis", "analyse_candidate", "analyse_candidates"]


class CandidateAnalysis(NamedTuple):
    """Segmentation and features of one seed (picklable, compact)."""

    row: dict  # table row: "centroid" (SWI voxel coordinates) and the features
    region_bits: np.ndarray  # np.packbits of the region
    region_shape: tuple
    bounds: tuple  # (start, stop) of the region's box along each axis (cropped grid)
    radius_est: float  # lesion radius estimated from the seed's scale (mm)
    touches: bool  # the region reaches the border of its analysis patch

    def region(self):
        """The segmented region (bool array of ``region_shape``)."""
        count = int(np.prod(self.region_shape))
        return np.unpackbits(self.region_bits, count=count).astype(bool).reshape(
            self.region_shape)


def _screened_out(n_voxels, touches, contrast, shape, p):
    """Cheap screening: clear vessels, faint or huge blobs skip the costly features.

    Shape is not judged on regions of a few voxels: two voxels side by side are
    "elongated" whatever the lesion looks like.
    """
    shape_known = n_voxels > p["min_voxels_for_shape"]
    return bool(
        touches
        or not contrast >= p["min_contrast"] - 0.15
        or shape["diameter_mm"] > p["max_diameter_mm"] + 2.0
        or (shape_known and shape["elongation_perp_b0"] > p["max_elongation_perp_b0"] + 0.6)
        or (shape_known and shape["b0_aspect"] > p["max_b0_aspect"] + 1.0)
    )


def _costly_features(context, region, rbox, centre, radius, sigma, level, weight):
    """Sphericity, surrounding dark fraction, Hessian ratio and (with phase) the dipole
    correlation and paramagnetic evidence of a candidate that passed screening (its
    context features, :func:`.context.context_features`, are computed beside)."""
    p, rel, voxel_size = context.parameters, context.relative, context.voxel_size
    sphericity = shape_features(region, rbox, voxel_size)["sphericity"]
    dark_fraction = surrounding_dark_fraction(rel, centre, radius, voxel_size, level)
    hess = hessian_blob_ratio(rel, centre, voxel_size, max(sigma, 0.5))
    corr = evidence = np.nan
    if context.phase is not None:
        corr = dipole_correlation(
            context.phase, weight, centre, context.affine, radius + 0.5,
            radius + 0.5 + p["dipole_shell_mm"] + radius,
        )
        evidence = context.phase_info["phase_sign"] * corr
    return sphericity, dark_fraction, hess, corr, evidence


def magnitude_contrast(magnitude_relative, region, rbox):
    """Signal loss of a candidate on the magnitude: 1 - the darkest smoothed relative
    magnitude inside its region (about 0: dark only on the SWI, through the phase mask;
    about 1: a signal void, as a microbleed is on T2*-weighted magnitude). NaN without
    magnitude."""
    if magnitude_relative is None:
        return np.nan
    return float(1.0 - magnitude_relative[rbox][region].min())


def _edge_distance_at(context, centre):
    """Distance to the brain edge (mm) at the block holding a voxel position."""
    ic = tuple(int(v) for v in np.clip(np.rint(centre), 0,
                                       np.array(context.relative.shape) - 1))
    edge = context.edge_distance
    return float(edge[tuple(min(c // f, n - 1)
                            for c, f, n in zip(ic, context.edge_factors, edge.shape))])


def analyse_candidate(context, n_peak, *, b0, weight):
    """Segmentation and features of one seed (independent of the other seeds).

    Parameters
    ----------
    context : cmbprep_detector.CandidateContext
    n_peak : int
        Index into ``context.peaks``.
    b0 : (3,) ndarray
        B0 direction along the array axes (:func:`cmbprep.algorithms.arrays.b0_direction`).
    weight : ndarray or None
        Phase reliability (relative intensity clipped to [0, 1.5]); None without phase.

    Returns
    -------
    CandidateAnalysis or None
        None when the segmentation is empty.
    """
    p, voxel_size = context.parameters, context.voxel_size
    peak = tuple(int(v) for v in context.peaks[n_peak])
    sigma = float(context.peak_sigma[n_peak])
    if n_peak >= context.n_blob_peaks:  # intensity minimum: small lesion, small patch
        sigma = min(sigma, float(p["minimum_seed_sigma_mm"]))
    radius_est = np.sqrt(3.0) * sigma
    region, rbox, background, darkest, touches, attached_ratio = segment_dark_lesion(
        context.relative, peak, voxel_size,
        patch_radius_mm=2 * radius_est + p["patch_margin_mm"],
        depth_fraction=p["depth_fraction"],
        opening_radius_mm=float(np.clip(p["opening_fraction"] * radius_est,
                                        *p["opening_radius_mm"])),
        deeper_fractions=p["deeper_fractions"],
        shallow_fraction=p["shallow_fraction"],
    )
    if not region.any():
        return None
    contrast = float(1.0 - darkest / background) if background > 0 else np.nan
    shape = shape_features(region, rbox, voxel_size, b0, surface=False)
    geom = slice_features(region, rbox, voxel_size, context.slice_axis)
    centre = shape["centroid_vox"]
    screened_out = _screened_out(int(region.sum()), touches, contrast, shape, p)
    sphericity = dark_fraction = hess = corr = evidence = np.nan
    context_row = dict.fromkeys(CONTEXT_FEATURES, np.nan)
    if not screened_out:
        level = background - p["depth_fraction"] * (background - darkest)
        sphericity, dark_fraction, hess, corr, evidence = _costly_features(
            context, region, rbox, centre, shape["diameter_mm"] / 2, sigma, level, weight)
        context_row = context_features(
            context.relative, centre, shape["diameter_mm"] / 2, voxel_size, background,
            b0=b0, depth_fraction=p["shallow_fraction"], phase=context.phase,
            weight=weight, phase_sign=context.phase_info.get("phase_sign", 1))
    row = {
        "centroid": centre + np.array([b.start for b in context.box]),
        "blobness": float(context.peak_blobness[n_peak]),
        "scale_mm": sigma,
        "contrast": contrast,
        "magnitude_contrast": magnitude_contrast(context.magnitude_relative, region, rbox),
        "volume_mm3": shape["volume_mm3"],
        "diameter_mm": shape["diameter_mm"],
        "elongation": shape["elongation"],
        "elongation_perp_b0": shape["elongation_perp_b0"],
        "b0_aspect": shape["b0_aspect"],
        "sphericity": sphericity,
        "circularity": geom["circularity"],
        "n_slices": geom["n_slices"],
        "centroid_shift_mm": geom["centroid_shift_mm"],
        "hessian_ratio": hess,
        "surrounding_dark_fraction": dark_fraction,
        "touches_patch_border": touches,
        "attached_depth_ratio": attached_ratio,
        "distance_to_edge_mm": _edge_distance_at(context, centre),
        "dipole_correlation": corr,
        "paramagnetic_evidence": evidence,
        **context_row,
        "n_voxels": int(region.sum()),
        "screened_out": screened_out,
    }
    bounds = tuple((sl.start, sl.stop) for sl in rbox)
    return CandidateAnalysis(row, np.packbits(region), region.shape, bounds, radius_est,
                             bool(touches))


def analyse_candidates(context, indices=None):
    """Second stage: :func:`analyse_candidate` for the given seeds (default: all).

    Returns
    -------
    dict
        Seed index -> :class:`CandidateAnalysis` or None.
    """
    if indices is None:
        indices = range(len(context.peaks))
    b0 = b0_direction(context.affine)
    weight = np.clip(context.relative, 0, 1.5) if context.phase is not None else None
    return {int(i): analyse_candidate(context, int(i), b0=b0, weight=weight)
            for i in indices}
