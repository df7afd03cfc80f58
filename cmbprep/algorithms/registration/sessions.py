"""Registration of a participant's later session onto the first (reference) session.

Rigid, mutual information, on the brains (each image masked by its brain mask dilated
by a few mm), at a working resolution in mm; ANTsPy's ``antsRegistration``
(:func:`.antsregistration.register_images`). Rigid, not affine: between sessions of one
participant the head moves but its size does not, and an affine stage would absorb
atrophy. The residual is the mean symmetric distance between the reference brain-mask
surface and the later session's brain-mask surface carried onto the reference grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..arrays import voxel_sizes
from .antsregistration import register_images
from .quality import normalized_mutual_information
from .resampling import finite_3d, resample_to_resolution
from .transforms import apply_transform, map_points

__all__ = ["MAX_RESIDUAL_MM", "SessionRegistration", "mask_surface_distance_mm",
           "points_in_field_of_view", "register_sessions"]

#: A session registration whose residual exceeds this (mm) fails QC.
MAX_RESIDUAL_MM = 2.0


@dataclass
class SessionRegistration:
    """A later session registered onto the reference session.

    ``forward`` resamples later-session images onto the reference (and so maps
    reference points to later-session points, the ANTs rule); ``inverse`` maps
    later-session points to reference points. ``residual_mm``: mean symmetric
    brain-mask surface distance after registration; ``nmi``: normalised mutual
    information of the two brains on the working grid.
    """

    forward: Path
    inverse: Path
    residual_mm: float
    nmi: float
    resolution_mm: float

    @property
    def ok(self) -> bool:
        """Whether the residual is finite and at most :data:`MAX_RESIDUAL_MM`."""
        return bool(np.isfinite(self.residual_mm) and self.residual_mm <= MAX_RESIDUAL_MM)

    def qc(self) -> dict:
        """The numbers and verdict, for a JSON sidecar."""
        return {"residual_mm": float(self.residual_mm), "nmi": float(self.nmi),
                "max_residual_mm": MAX_RESIDUAL_MM, "registration_ok": self.ok,
                "resolution_mm": float(self.resolution_mm), "transform": "rigid",
                "metric": "mutual information (Mattes, 32 bins)"}


def _masked_brain(image, mask, dilate_mm):
    """``image`` times its brain mask dilated by ``dilate_mm``."""
    data = finite_3d(image).get_fdata(dtype=np.float32)
    brain = np.asarray(mask.dataobj) > 0
    steps = np.maximum(1, np.round(dilate_mm / voxel_sizes(mask.affine))).astype(int)
    structure = np.ones(tuple(2 * s + 1 for s in steps), bool)
    brain = ndimage.binary_dilation(brain, structure=structure)
    return nib.Nifti1Image(np.where(brain, data, 0).astype(np.float32), image.affine)


def mask_surface_distance_mm(mask_a, mask_b, voxel_size_mm) -> float:
    """Mean symmetric distance (mm) between the surfaces of two masks on one grid."""
    a, b = np.asarray(mask_a, bool), np.asarray(mask_b, bool)
    if not a.any() or not b.any():
        return float("nan")

    def surface(m):
        return m & ~ndimage.binary_erosion(m)

    def distance_to(m):
        return ndimage.distance_transform_edt(~surface(m), sampling=voxel_size_mm)

    sa, sb = surface(a), surface(b)
    return float(0.5 * (distance_to(b)[sa].mean() + distance_to(a)[sb].mean()))


def register_sessions(reference, reference_mask, moving, moving_mask, out_prefix, *,
                      seed: int = 0, resolution_mm: float = 1.5,
                      dilate_mm: float = 4.0, iterations=(500, 250, 100),
                      convergence_threshold: float = 1e-5) -> SessionRegistration:
    """Rigidly register a later session's image (``moving``) onto the reference session.

    Parameters
    ----------
    reference, moving : nibabel.Nifti1Image
        The sessions' images (e.g. the bias-corrected SWI), 3D.
    reference_mask, moving_mask : nibabel.Nifti1Image
        Their brain masks, on their grids.
    out_prefix : path-like
        Prefix of the transform files (``<prefix>Composite.h5`` and
        ``<prefix>InverseComposite.h5``).
    seed : int
        ``antsRegistration --random-seed``.
    resolution_mm : float
        Isotropic working resolution.
    dilate_mm : float
        Dilation of the brain masks before masking the images (keeps the brain edge).
    iterations : sequence of 3 int
        Largest number of iterations at shrink 4, 2 and 1.
    convergence_threshold : float
        Each of the three levels (shrink 4, 2, 1) stops when the metric's slope over 10
        iterations falls below this. 1e-5 rather than the template registration's 1e-6:
        as accurate on simulated session pairs and half the time
        (``benchmarks/session_registration.py``, docs/benchmarks.md).

    Returns
    -------
    SessionRegistration
    """
    fixed = resample_to_resolution(_masked_brain(reference, reference_mask, dilate_mm),
                                   resolution_mm)
    mov = resample_to_resolution(_masked_brain(moving, moving_mask, dilate_mm),
                                 resolution_mm)
    fixed_mask = resample_to_resolution(
        nib.Nifti1Image((np.asarray(reference_mask.dataobj) > 0).astype(np.float32),
                        reference_mask.affine), resolution_mm, interp="nearest")
    forward, inverse = register_images(fixed, mov, out_prefix, stages=("Rigid",),
                                       seed=seed, mask_linear_stages=False,
                                       affine_iterations=tuple(iterations),
                                       convergence_threshold=convergence_threshold)
    moved_mask = apply_transform(
        nib.Nifti1Image((np.asarray(moving_mask.dataobj) > 0).astype(np.float32),
                        moving_mask.affine), fixed_mask, forward,
        interpolation="nearestNeighbor")
    ref_brain = np.asarray(fixed_mask.dataobj) > 0.5
    moved_brain = np.asarray(moved_mask.dataobj) > 0.5
    residual = mask_surface_distance_mm(ref_brain, moved_brain, voxel_sizes(fixed.affine))
    moved = apply_transform(mov, fixed, forward, interpolation="linear")
    both = ref_brain & moved_brain
    nmi = normalized_mutual_information(np.asarray(fixed.dataobj)[both],
                                        np.asarray(moved.dataobj)[both])
    return SessionRegistration(forward=forward, inverse=inverse, residual_mm=residual,
                               nmi=nmi, resolution_mm=float(resolution_mm))


def points_in_field_of_view(points_mm, shape, affine, *, transform=None,
                            margin_mm: float = 2.0) -> np.ndarray:
    """Whether each point lies inside an image's field of view, ``margin_mm`` in.

    Parameters
    ----------
    points_mm : (N, 3) array
        Scanner RAS+ mm, in the space ``transform`` maps from (the reference session's
        space with a session registration's ``forward``), else the image's own space.
    shape, affine
        The image grid.
    transform : path-like, optional
        ANTs transform mapping the points into the image's space.
    """
    points = np.asarray(points_mm, dtype=float).reshape(-1, 3)
    if not len(points):
        return np.zeros(0, bool)
    if transform is not None:
        points = map_points(points, transform)
    ijk = nib.affines.apply_affine(np.linalg.inv(np.asarray(affine, float)), points)
    margin = margin_mm / voxel_sizes(affine)
    upper = np.asarray(shape[:3], float) - 1.0
    return np.all((ijk >= -0.5 + margin) & (ijk <= upper + 0.5 - margin), axis=1)
