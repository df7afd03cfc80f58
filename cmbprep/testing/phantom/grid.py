"""Acquisition grid: slice frame (oblique, flipped), storage order and field of view.

The simulation grid covers the whole head (or the brain) in the (read, phase, slice)
frame, extended to the requested field of view; the output image is a crop of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import template_maps
from .geometry import apply_affine, rotation_matrix

__all__ = ["AcquisitionGrid", "acquisition_frame", "acquisition_grid"]

#: Template mm point used as the brain centre (FOV centre, smooth field origin).
_BRAIN_CENTRE_MNI = (0.0, -18.0, 8.0)


@dataclass
class AcquisitionGrid:
    """Simulation grid of one scan, in stored array order.

    Attributes
    ----------
    affine, inv_affine : (4, 4) ndarray
        Voxel to scanner mm of the simulation grid, and its inverse.
    shape : tuple of 3 int
    voxel_size : tuple of 3 float
        mm (the configured sizes, permuted to stored order).
    crop : tuple of 3 slice
        The output field of view within the simulation grid.
    head_points_mm : (N, 3) ndarray
        Scanner mm points on the outer surface of the head (or brain).
    brain_centre_mm : (3,) ndarray
        Scanner mm of the brain centre.
    """

    affine: np.ndarray
    inv_affine: np.ndarray
    shape: tuple
    voxel_size: tuple
    crop: tuple
    head_points_mm: np.ndarray
    brain_centre_mm: np.ndarray


def acquisition_frame(cfg, rng):
    """Unit vectors (columns) of the read/phase/slice axes in scanner coordinates and the
    storage permutation."""
    frame = np.eye(3)
    if cfg.random_affine:
        if rng.random() < 0.5:  # swap in-plane read/phase directions
            frame = frame[:, [1, 0, 2]]
        frame = frame * rng.choice([-1.0, 1.0], size=3)
        if cfg.max_oblique_deg > 0:
            oblique = rotation_matrix(rng.normal(size=3),
                                      np.deg2rad(rng.uniform(0, cfg.max_oblique_deg)))
            frame = oblique @ frame
    perm = np.arange(3)
    if cfg.random_affine and cfg.random_storage_order:
        perm = rng.permutation(3)
    return frame, perm


def _output_box(cfg, full_lo, shape_acq, vox_acq, centre_acq):
    """Low and high corners (acquisition mm) of the output field of view: the whole head,
    or ``fov_mm`` around the brain centre (slice axis shifted by ``slab_offset_mm``)."""
    out_lo, out_hi = full_lo.copy(), full_lo + (shape_acq - 1) * vox_acq
    if cfg.fov_mm is not None:
        for a, f in enumerate(cfg.fov_mm):
            if f is None:
                continue
            c = centre_acq[a] + (cfg.slab_offset_mm if a == 2 else 0.0)
            out_lo[a], out_hi[a] = c - f / 2.0, c + f / 2.0
    return out_lo, out_hi


def acquisition_grid(cfg, xfm, frame, perm) -> AcquisitionGrid:
    """Grid covering the head (plus 3 mm) and the requested field of view.

    Parameters
    ----------
    cfg : PhantomConfig
    xfm : TemplateTransform
    frame, perm
        From :func:`acquisition_frame`.
    """
    t = template_maps()
    surface = t["head_surface"] if cfg.include_head else t["brain_surface"]
    corners_sc = xfm.template_to_scanner(surface)
    brain_centre_sc = xfm.template_to_scanner(np.array([_BRAIN_CENTRE_MNI]))[0]
    proj = apply_affine(np.block([[frame.T, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]),
                        corners_sc)  # coordinates along read/phase/slice
    vox_acq = np.array(cfg.voxel_size_mm)
    full_lo, full_hi = proj.min(0) - 3.0, proj.max(0) + 3.0
    shape_acq = np.ceil((full_hi - full_lo) / vox_acq).astype(int) + 1
    out_lo, out_hi = _output_box(cfg, full_lo, shape_acq, vox_acq, brain_centre_sc @ frame)
    # the simulation grid covers the head and the requested FOV
    sim_lo = np.minimum(full_lo, out_lo)
    sim_hi = np.maximum(full_hi, out_hi)
    shape_acq = np.ceil((sim_hi - sim_lo) / vox_acq - 1e-6).astype(int) + 1
    out_start = np.round((out_lo - sim_lo) / vox_acq).astype(int)
    out_shape = np.maximum(np.round((out_hi - out_lo) / vox_acq).astype(int), 1)

    # affine in acquisition (read, phase, slice) order, then permuted for storage
    aff_acq = np.eye(4)
    aff_acq[:3, :3] = frame * vox_acq
    aff_acq[:3, 3] = frame @ sim_lo
    affine = np.eye(4)
    affine[:3, :3] = aff_acq[:3, :3][:, perm]
    affine[:3, 3] = aff_acq[:3, 3]
    return AcquisitionGrid(
        affine=affine,
        inv_affine=np.linalg.inv(affine),
        shape=tuple(int(shape_acq[p]) for p in perm),
        voxel_size=tuple(float(vox_acq[p]) for p in perm),
        crop=tuple(slice(int(out_start[p]), int(out_start[p] + out_shape[p])) for p in perm),
        head_points_mm=corners_sc,
        brain_centre_mm=brain_centre_sc,
    )
