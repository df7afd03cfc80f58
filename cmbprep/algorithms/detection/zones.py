"""Phase-mask artefact zones of the SWI and the detection image that avoids them.

The SWI is the bias-corrected magnitude times the phase mask to the power 4. Near
air-tissue interfaces (skull base: cerebellum, brainstem, inferior frontal and temporal
lobes) the high-pass filtered phase keeps residual background field, and the mask then
darkens whole zones of several cm^3 whose magnitude is normal. A microbleed inside such
a zone is segmented together with its dark surroundings (a region of 12-15 mm that
leaves its analysis patch) and screened out. :func:`phase_artefact_zones` finds these
zones from the SWI/magnitude ratio (the mask itself), and :func:`zone_detection_image`
replaces the SWI by the magnitude inside them (with a soft edge, so that the zone border
makes no dark edge of its own). The phase inside a zone is background field, not the
lesion's: the detector scores candidates centred there without it (see
:func:`.cmbprep_detector.find_candidates` and ``docs/detection.rst``).

All lengths are in mm and volumes in cm^3, so the zones do not depend on the voxel size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import sigma_voxels

__all__ = ["phase_artefact_zones", "zone_detection_image"]


def phase_artefact_zones(swi, magnitude, brain_mask, voxel_size, *, sigma_mm=3.0,
                         level=0.5, min_cm3=1.0):
    """Zones where the phase mask darkens the SWI over a large region.

    Parameters
    ----------
    swi, magnitude : (X, Y, Z) array_like
        Bias-corrected SWI and the bias-corrected magnitude it was made from (same grid
        and bias field, so their ratio is the phase mask to the SWI power).
    brain_mask : (X, Y, Z) array_like of bool
    voxel_size : sequence of 3 float
        Voxel edge lengths (mm).
    sigma_mm : float, optional
        Gaussian sigma (mm) of the smoothing of the ratio (outside the brain the ratio
        counts as 1); small dark structures (veins, microbleeds) do not make a zone.
    level : float, optional
        Smoothed ratio below which a brain voxel belongs to a zone.
    min_cm3 : float, optional
        Connected pieces (face connectivity) smaller than this volume are dropped.

    Returns
    -------
    zone : ndarray of bool
        Same shape as ``swi``.
    """
    swi = np.asarray(swi, dtype=np.float32)
    magnitude = np.asarray(magnitude, dtype=np.float32)
    brain = np.asarray(brain_mask, dtype=bool)
    if not (swi.shape == magnitude.shape == brain.shape):
        raise ValueError(f"SWI {swi.shape}, magnitude {magnitude.shape} and brain mask "
                         f"{brain.shape} must have the same shape")
    ratio = np.where(magnitude > 0, swi / np.maximum(magnitude, np.float32(1e-6)),
                     np.float32(1.0)).astype(np.float32)
    ratio = np.where(brain & np.isfinite(ratio), ratio, np.float32(1.0))
    # outside the array the ratio is 1 as outside the brain (so a crop gives the same)
    smooth = ndi.gaussian_filter(ratio, sigma_voxels(sigma_mm, voxel_size), mode="constant",
                                 cval=1.0)
    zone = brain & (smooth < level)
    labels, n = ndi.label(zone)
    if n:
        voxel_cm3 = float(np.prod(np.asarray(voxel_size, dtype=float))) / 1000.0
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_cm3
        keep = np.zeros(n + 1, dtype=bool)
        keep[1:] = sizes >= min_cm3
        zone = keep[labels]
    return zone


def zone_detection_image(swi, magnitude, zone, voxel_size, *, edge_mm=2.0):
    """The SWI with the magnitude inside the zones, blended over about ``edge_mm``.

    The blend weight is twice the Gaussian-smoothed (sigma ``edge_mm``) zone indicator,
    clipped to [0, 1]: 1 inside the zone away from its edge, falling to 0 about
    ``edge_mm`` outside it.

    Returns
    -------
    ndarray of float32
        Equal to ``swi`` wherever no zone is within a few ``edge_mm``.
    """
    swi = np.asarray(swi, dtype=np.float32)
    if not np.any(zone):
        return swi
    weight = ndi.gaussian_filter(np.asarray(zone, dtype=np.float32),
                                 sigma_voxels(edge_mm, voxel_size), mode="constant", cval=0.0)
    weight = np.clip(2.0 * weight, 0.0, 1.0)
    out = swi + weight * (np.asarray(magnitude, dtype=np.float32) - swi)
    return np.where(weight > 0, out, swi).astype(np.float32)
