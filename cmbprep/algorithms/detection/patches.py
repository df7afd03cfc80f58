"""Candidate patches: each candidate's neighbourhood sampled on a lattice in millimetres.

The patch network (:mod:`.network`) looks at a candidate through two small cubes of
relative intensity (the SWI and the bias-corrected magnitude, each divided by its local
tissue background), sampled at the same physical points whatever the voxel size, the
storage order or an oblique slab: :data:`PATCH_POINTS` points per side,
:data:`PATCH_STEP_MM` apart, trilinear, on a lattice whose third axis is B0 (scanner
``z``), because a vein's and a microbleed's look depend on their angle to B0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import voxel_sizes
from .candidates import relative_intensity

__all__ = ["PATCH_BACKGROUND_MM", "PATCH_POINTS", "PATCH_STEP_MM", "b0_lattice_mm",
           "candidate_patches", "patch_views"]

#: Lattice points per side of a patch (odd: the candidate's centre is a point).
PATCH_POINTS = 11
#: Distance between lattice points (mm); the cube is 7.7 mm across.
PATCH_STEP_MM = 0.7
#: Width (mm) of the local tissue background the intensities are divided by, as the
#: detector's ``background_sigma_mm``.
PATCH_BACKGROUND_MM = 10.0
#: Relative intensities are clipped to [0, this] (a bright vessel or artefact cannot
#: dominate a patch).
MAX_RELATIVE_INTENSITY = 1.5


def b0_lattice_mm(points=PATCH_POINTS, step_mm=PATCH_STEP_MM):
    """Offsets (mm, scanner axes) of the patch lattice from its centre.

    Returns
    -------
    (points**3, 3) ndarray
        In C order of ``(a, b, c)`` lattice indices, ``c`` along B0 (scanner ``z``),
        ``a`` and ``b`` along scanner ``x`` and ``y``.
    """
    o = (np.arange(points) - (points - 1) / 2.0) * float(step_mm)
    return np.stack(np.meshgrid(o, o, o, indexing="ij"), axis=-1).reshape(-1, 3)


def relative_channel(image, brain_mask, voxel_size):
    """Relative intensity of ``image`` (:func:`.candidates.relative_intensity`, local
    background :data:`PATCH_BACKGROUND_MM`), clipped to [0,
    :data:`MAX_RELATIVE_INTENSITY`], as float32."""
    rel = relative_intensity(np.asarray(image, dtype=np.float32), brain_mask,
                             background_mm=PATCH_BACKGROUND_MM, voxel_size=voxel_size)
    return np.clip(rel, 0.0, MAX_RELATIVE_INTENSITY).astype(np.float32)


def candidate_patches(swi, magnitude, brain_mask, affine, centres_vox):
    """Patches of relative intensity around candidates.

    Parameters
    ----------
    swi : (X, Y, Z) array_like
        The SWI.
    magnitude : (X, Y, Z) array_like or None
        The bias-corrected magnitude the SWI was made from; None (scanner SWI, or not
        given): the SWI takes its place, as it does in training for scanner-SWI inputs.
    brain_mask : (X, Y, Z) array_like of bool
    affine : (4, 4) array_like
        Voxel-to-scanner-mm transform (voxel sizes and B0 direction come from it).
    centres_vox : (N, 3) array_like
        Candidate centres in voxel indices (the candidate table's ``i j k``).

    Returns
    -------
    (N, 2, PATCH_POINTS, PATCH_POINTS, PATCH_POINTS) ndarray of float32
        Relative intensity minus one (0 is background tissue, -1 black) of the SWI
        (channel 0) and of the magnitude (channel 1); the last axis runs along B0.
    """
    centres = np.asarray(centres_vox, dtype=float).reshape(-1, 3)
    n = PATCH_POINTS
    out = np.empty((len(centres), 2, n, n, n), np.float32)
    if not len(centres):
        return out
    affine = np.asarray(affine, dtype=float)
    brain = np.asarray(brain_mask, dtype=bool)
    vs = tuple(float(v) for v in voxel_sizes(affine))
    lattice_vox = np.linalg.inv(affine[:3, :3]) @ b0_lattice_mm().T  # (3, n**3)
    for c, image in enumerate((swi, magnitude)):
        if image is None:  # no magnitude: the SWI's channel again
            out[:, c] = out[:, 0]
            continue
        channel = relative_channel(image, brain, vs)
        for row, centre in enumerate(centres):
            out[row, c] = ndi.map_coordinates(channel, centre[:, None] + lattice_vox,
                                              order=1, mode="nearest").reshape(n, n, n)
    return out - np.float32(1.0)


def patch_views(patches):
    """The patches and three mirror images that keep B0 the last axis (flip along B0,
    flip across it, swap the two axes across it): four (N, 2, P, P, P) arrays."""
    p = np.asarray(patches)
    return [p, p[..., ::-1], p[:, :, ::-1], p.transpose(0, 1, 3, 2, 4)]
