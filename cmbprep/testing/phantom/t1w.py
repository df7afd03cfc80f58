"""T1-weighted image of the phantom head on its own axis-aligned grid."""

from __future__ import annotations

import numpy as np

from .anatomy import CSF_OUTER_MM, SCALP_OUTER_MM, SKULL_OUTER_MM, sample, template_maps
from .geometry import grid_points

__all__ = ["simulate_t1w"]


def simulate_t1w(cfg, xfm, rng, corners_sc):
    """T1-weighted image on an axis-aligned (RAS) grid covering the head.

    Parameters
    ----------
    cfg : PhantomConfig
        ``t1w_voxel_size_mm`` (isotropic), ``include_head`` and ``noise_level`` are used.
    xfm : TemplateTransform
    rng : numpy.random.Generator
        Noise stream.
    corners_sc : (N, 3) ndarray
        Scanner mm points whose bounding box the grid covers.

    Returns
    -------
    image : ndarray float32
    affine : (4, 4) ndarray
    """
    t = template_maps()
    v = float(cfg.t1w_voxel_size_mm)
    lo, hi = corners_sc.min(0), corners_sc.max(0)
    shape = tuple(np.ceil((hi - lo) / v).astype(int) + 1)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = lo
    out = np.zeros(shape, np.float32)
    step = max(1, int(2_000_000 // (shape[1] * shape[2])))
    for s0 in range(0, shape[0], step):
        sl = slice(s0, min(shape[0], s0 + step))
        pts = grid_points(affine, shape, sl)
        m = xfm.scanner_to_template(pts, exact=False)
        t1 = sample(t["t1"], t["inv_affine"], m)
        br = sample(t["brain"], t["inv_affine"], m)
        val = t1 * br
        if cfg.include_head:
            d = sample(t["dist"], t["dist_inv_affine"], m, cval=60.0)
            rest = 1 - br
            val += rest * np.where(d < CSF_OUTER_MM, 0.1,
                                   np.where(d < SKULL_OUTER_MM, 0.05,
                                            np.where(d < SCALP_OUTER_MM, 0.85, 0.0)))
        out[sl] = val.reshape((sl.stop - sl.start,) + shape[1:])
    out = out * 1000.0
    if cfg.noise_level > 0:
        out = np.abs(out + 1000 * cfg.noise_level * rng.standard_normal(out.shape).astype(
            np.float32))
    return out.astype(np.float32), affine
