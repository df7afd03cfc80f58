"""Registration of the template (moving) to one subject image with skull (fixed).

The subject is block-averaged and resampled to a coarse isotropic working resolution
(2 mm by default); a head mask on that grid (given, or estimated by Otsu) provides a
centre-of-mass initialisation. Pass 1 runs rigid + affine on the whole head; the warped
template brain mask, dilated, becomes the fixed-image metric mask of pass 2 (affine +
SyN), which keeps skull and scalp out of the metric. QC is computed on the working grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..arrays import ball_mm, voxel_sizes
from .antsregistration import register_images, set_ants_threads, write_translation
from .quality import registration_quality, volume_scale
from .resampling import block_average_to_resolution, finite_3d, resample_to_resolution, to_ants
from .template import load_template
from .transforms import apply_transform


@dataclass
class RegistrationResult:
    """Files and QC of a template-to-subject registration."""

    template_to_subject_xfm: Path
    subject_to_template_xfm: Path
    qc: dict = field(default_factory=dict)
    warped_template_mask: nib.Nifti1Image | None = None  # on the coarse subject grid


def register_template_to_subject(
    subject: nib.Nifti1Image,
    work_dir: str | Path,
    *,
    head_mask: nib.Nifti1Image | None = None,
    resolution_mm: float = 2.0,
    seed: int = 0,
    n_threads: int = 1,
    prefix: str = "template_to_subject_",
    syn_iterations=(50, 15, 0),
    refine_affine_iterations=(100, 10),
    mask_dilation_mm: float = 6.0,
    qc_thresholds: dict | None = None,
    convergence_threshold: float = 1e-6,
) -> RegistrationResult:
    """Register the ICBM152 template (moving) to a subject image with skull (fixed).

    Parameters
    ----------
    subject : nibabel.Nifti1Image
        Bias-corrected magnitude (or T1w) in subject space; any storage order/oblique
        affine.
    work_dir : path-like
        Directory for the transform files.
    head_mask : nibabel.Nifti1Image, optional
        Head (foreground) mask on the subject grid; estimated by Otsu when missing.
    resolution_mm : float
        Isotropic working resolution in mm (default 2 mm: ~10x faster than 1 mm; the
        transform is applied at full resolution afterwards). The subject image is
        first block-averaged over whole voxels up to this size (box anti-aliasing,
        and ANTs never sees the full-resolution image).
    seed : int
        ANTs ``--random-seed``.
    n_threads : int
        ITK threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``).
    syn_iterations : sequence of int
        SyN iterations at shrink factors 4, 2, 1 of the working grid. The default does
        no iteration at shrink 1 (each one costs about as much as ten at shrink 2, and
        the phantom accuracy tests pass without them): the field is estimated at
        shrink 4 and 2 (8 and 4 mm at the default resolution) and upsampled. Pass 1 is
        fixed: rigid + affine (500, 250 iterations at shrink 4, 2); pass 2 is affine
        (``refine_affine_iterations`` at shrink 2, 1) then SyN, all Mattes MI (32 bins,
        25 % regular sampling for linear stages).
    refine_affine_iterations : sequence of 2 int
        Iterations of the masked pass-2 affine stage at shrink 2 and 1 (the metric is
        flat after about ten iterations at shrink 1).
    mask_dilation_mm : float
        Dilation of the affinely warped template brain mask that becomes the
        fixed-image metric mask of the second pass (excludes most scalp).
    qc_thresholds : dict, optional
        Overrides for :data:`~cmbprep.algorithms.registration.QC_THRESHOLDS`.
    convergence_threshold : float
        Every level of both passes stops when the metric's slope over 10 iterations falls
        below this (1e-5 saves about 15 % here for the same error,
        ``benchmarks/template_registration.py``).

    Returns
    -------
    RegistrationResult
    """
    set_ants_threads(n_threads)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    template, template_mask = load_template(1.0)
    tpl = resample_to_resolution(template, resolution_mm)
    tpl_mask = resample_to_resolution(template_mask, resolution_mm, interp="nearest")
    subject = finite_3d(subject)
    sub = resample_to_resolution(
        block_average_to_resolution(subject.dataobj, subject.affine, resolution_mm),
        resolution_mm,
    )
    head = _head_mask_on_grid(head_mask, sub, resolution_mm)
    fwd, inv, durations = _register_two_passes(
        sub, tpl, tpl_mask, head, work_dir, prefix, seed=seed,
        refine_affine_iterations=refine_affine_iterations, syn_iterations=syn_iterations,
        mask_dilation_mm=mask_dilation_mm, convergence_threshold=convergence_threshold,
    )  # fmt: skip
    qc, warped_mask = _quality(sub, tpl, tpl_mask, head, fwd, qc_thresholds)
    qc["resolution_mm"] = float(resolution_mm)
    qc["seed"] = int(seed)
    qc["duration_s"] = durations
    return RegistrationResult(fwd, inv, qc, warped_mask)


def _head_mask_on_grid(head_mask, sub: nib.Nifti1Image, resolution_mm: float) -> np.ndarray:
    """Head mask on the working grid of ``sub``: the given mask block-averaged and
    linearly resampled (> 0.5), or :func:`estimate_head_mask` when there is none."""
    if head_mask is None:
        head = estimate_head_mask(np.asarray(sub.dataobj), voxel_sizes(sub.affine))
    else:
        head_data = np.asarray(head_mask.dataobj) > 0
        coarse = block_average_to_resolution(head_data, head_mask.affine, resolution_mm)
        head = apply_transform(coarse, sub, [], interpolation="linear")
        head = np.asarray(head.dataobj) > 0.5
    if head.sum() < 100:
        raise ValueError("head mask is empty: the subject image has no foreground")
    return head


def _centroid_lps(image) -> np.ndarray:
    """Physical (LPS) centroid of the non-zero voxels of an ANTs image."""
    arr = image.numpy() > 0
    idx = np.argwhere(arr).mean(axis=0)
    direction = np.asarray(image.direction)
    return np.asarray(image.origin) + direction @ (idx * np.asarray(image.spacing))


def _register_two_passes(sub, tpl, tpl_mask, head, work_dir: Path, prefix: str, *, seed,
                         refine_affine_iterations, syn_iterations, mask_dilation_mm,
                         convergence_threshold):
    """Centre-of-mass initialisation, pass 1 (rigid + affine, whole head) and pass 2
    (affine + SyN inside the dilated, affinely warped template brain).

    Returns the forward and inverse composite transforms and the pass durations (s).
    """
    # Centre-of-mass initialisation: template brain centroid onto the head centroid.
    c_fixed = _centroid_lps(to_ants(nib.Nifti1Image(head.astype(np.uint8), sub.affine)))
    c_moving = _centroid_lps(to_ants(tpl_mask))
    init = write_translation(work_dir / f"{prefix}init.mat", c_moving - c_fixed)
    t_start = time.perf_counter()
    lin_fwd, _ = register_images(
        sub, tpl, work_dir / f"{prefix}pass1_", initial_transform=init,
        stages=("Rigid", "Affine"), seed=seed, affine_iterations=(500, 250),
        shrink_factors=(4, 2), smoothing_mm=(4.0, 2.0), mask_linear_stages=False,
        convergence_threshold=convergence_threshold,
    )  # fmt: skip
    fixed_mask = _pass2_metric_mask(tpl_mask, sub, lin_fwd, head, mask_dilation_mm)
    t_pass1 = time.perf_counter() - t_start
    fwd, inv = register_images(
        sub, tpl, work_dir / prefix,
        fixed_mask=nib.Nifti1Image(fixed_mask.astype(np.uint8), sub.affine),
        initial_transform=lin_fwd, stages=("Affine", "SyN"), seed=seed,
        affine_iterations=tuple(refine_affine_iterations), shrink_factors=(2, 1),
        smoothing_mm=(2.0, 0.0), syn_iterations=syn_iterations,
        convergence_threshold=convergence_threshold,
    )  # fmt: skip
    t_pass2 = time.perf_counter() - t_start - t_pass1
    for f in work_dir.glob(f"{prefix}pass1_*"):
        f.unlink()
    init.unlink(missing_ok=True)
    return fwd, inv, {"linear": round(t_pass1, 1), "affine_syn": round(t_pass2, 1)}


def _pass2_metric_mask(tpl_mask, sub, lin_fwd, head: np.ndarray, dilation_mm: float):
    """The affinely warped template brain mask dilated by ``dilation_mm``, within the
    head mask dilated by 4 mm."""
    warped_mask = apply_transform(tpl_mask, sub, lin_fwd, interpolation="linear")
    brain = np.asarray(warped_mask.dataobj) > 0.5
    vs = voxel_sizes(sub.affine)
    return ndimage.binary_dilation(brain, ball_mm(dilation_mm, vs)) & ndimage.binary_dilation(
        head, ball_mm(4.0, vs)
    )


def _quality(sub, tpl, tpl_mask, head, fwd, thresholds):
    """QC of the final transform on the working grid; also returns the warped template
    brain mask (linear interpolation)."""
    warped_tpl = apply_transform(tpl, sub, fwd, interpolation="linear")
    warped_mask = apply_transform(tpl_mask, sub, fwd, interpolation="linear")
    brain = np.asarray(warped_mask.dataobj) > 0.5
    qc = registration_quality(
        np.asarray(sub.dataobj),
        np.asarray(warped_tpl.dataobj),
        brain,
        head,
        affine_scale=volume_scale(brain, float(np.prod(voxel_sizes(sub.affine))), tpl_mask),
        thresholds=thresholds,
    )
    return qc, warped_mask


def estimate_head_mask(image: np.ndarray, voxel_size) -> np.ndarray:
    """Head (foreground) mask by Otsu threshold, largest component and hole filling.

    The fallback when no head mask is given (e.g. for a T1w, whose extent the SWI head
    mask does not describe).

    Parameters
    ----------
    image : ndarray (X, Y, Z)
        Magnitude image.
    voxel_size : sequence of 3 floats
        Voxel size in mm.

    Returns
    -------
    ndarray of bool
    """
    from skimage.filters import threshold_otsu

    data = np.nan_to_num(np.asarray(image, dtype=np.float32))
    hi = np.percentile(data, 99.5)
    clipped = np.clip(data, 0, hi)
    level = threshold_otsu(clipped[clipped > 0]) if np.any(clipped > 0) else 0.0
    mask = clipped > 0.5 * level
    radius_vox = np.maximum(np.round(3.0 / np.asarray(voxel_size)).astype(int), 1)
    mask = ndimage.binary_closing(mask, _ellipsoid(radius_vox), iterations=1)
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    filled = mask.copy()
    for axis in range(3):  # fill holes slice by slice along each axis, then in 3D
        filled |= _fill_slices(mask, axis)
    return ndimage.binary_fill_holes(filled)


def _fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(mask, axis, 0)
    out = np.stack([ndimage.binary_fill_holes(s) for s in moved], axis=0)
    return np.moveaxis(out, 0, axis)


def _ellipsoid(radius_vox) -> np.ndarray:
    """Ellipsoid with semi-axes ``radius_vox`` (voxels), the closing element of
    :func:`estimate_head_mask` (not :func:`~cmbprep.algorithms.arrays.ball_mm`: the
    radius is rounded per axis, not floored)."""
    r = np.asarray(radius_vox, dtype=int)
    grids = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    dist = sum((g / max(rr, 1)) ** 2 for g, rr in zip(grids, r))
    return dist <= 1.0
