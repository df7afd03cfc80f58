"""Brain extraction on SWI-space magnitude images (template based, ANTs-style).

The brain mask is the ICBM152 template brain mask carried into subject space by the
template-to-subject transform of :mod:`cmbprep.algorithms.registration` (the
registration copes with skull/scalp by a head-mask centre-of-mass initialisation and a
masked second pass). The warped mask (linearly interpolated, thresholded at 0.5) is then
refined with intensity and morphology in millimetres:

1. voxels in a band of ``band_mm`` inside the mask edge that are darker than
   ``dark_fraction`` x the local brain intensity *and connected to the outside of the
   mask* (skull, air caught at the edge) are removed; the local brain intensity is a
   Gaussian-weighted mean (``sigma = smooth_mm``) of the masked image, so a smooth
   receive bias cancels;
2. a closing with a ball of ``protect_mm`` (limited to the initial mask) restores
   narrow notches, so dark microbleeds at the brain surface stay inside the mask;
3. a morphological opening with a ball of ``opening_mm``, the largest connected
   component, and hole filling.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from .arrays import (
    block_factors,
    block_reduce,
    upsample_linear,
    upsample_nearest,
    voxel_sizes,
)
from .registration import apply_transform, coarse_affine, load_template

#: Default parameters of :func:`refine_brain_mask` (reported in the brain-mask sidecar).
REFINEMENT_DEFAULTS = {
    "band_mm": 3.0,
    "dark_fraction": 0.35,
    "smooth_mm": 15.0,
    "opening_mm": 1.5,
    "protect_mm": 4.0,
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (1 = identical)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / denom) if denom else 1.0


def warp_template_mask(
    reference: nib.Nifti1Image, template_to_subject_xfm
) -> np.ndarray:
    """Template brain-mask probability (0-1) on the reference grid (linear interp.)."""
    _, mask = load_template(1.0)
    mask = nib.Nifti1Image(np.asarray(mask.dataobj, np.float32), mask.affine)
    ref = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    out = apply_transform(mask, ref, template_to_subject_xfm, interpolation="linear")
    return np.clip(np.asarray(out.dataobj, np.float32), 0.0, 1.0)


def _edt_mm(mask: np.ndarray, vs) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=vs)


def binary_closing_mm(mask: np.ndarray, radius_mm: float, voxel_size) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm`` via Euclidean distance transforms
    (exact for a ball, fast for large radii on fine grids). Pads by the radius."""
    vs = np.asarray(voxel_size, float)
    pad = np.ceil(radius_mm / vs).astype(int) + 1
    padded = np.pad(np.asarray(mask, bool), [(p, p) for p in pad])
    dilated = _edt_mm(~padded, vs) <= radius_mm
    closed = _edt_mm(dilated, vs) > radius_mm
    return closed[pad[0] : -pad[0], pad[1] : -pad[1], pad[2] : -pad[2]]


def binary_opening_mm(mask: np.ndarray, radius_mm: float, voxel_size) -> np.ndarray:
    """Binary opening with a ball of ``radius_mm`` via Euclidean distance transforms."""
    vs = np.asarray(voxel_size, float)
    mask = np.asarray(mask, bool)
    eroded = _edt_mm(mask, vs) > radius_mm
    return (_edt_mm(~eroded, vs) <= radius_mm) & mask


def _local_mean(image, mask, vs, sigma_mm, coarse_mm: float = 2.0) -> np.ndarray:
    """Gaussian-weighted mean of ``image`` over ``mask`` (normalised convolution),
    computed on a grid decimated to about ``coarse_mm`` and expanded back."""
    step = np.asarray(block_factors(vs, coarse_mm, rounding="round"))
    sl = tuple(slice(None, None, int(st)) for st in step)
    img_c = np.where(mask, image, 0.0)[sl]
    msk_c = mask[sl].astype(np.float32)
    sigma = sigma_mm / (vs * step)
    num = ndimage.gaussian_filter(img_c.astype(np.float32), sigma)
    den = ndimage.gaussian_filter(msk_c, sigma)
    local_c = num / np.maximum(den, 1e-3)
    return upsample_nearest(local_c, step, image.shape)


def refine_brain_mask(
    image: np.ndarray,
    mask: np.ndarray,
    voxel_size,
    *,
    head_mask: np.ndarray | None = None,
    band_mm: float = 3.0,
    dark_fraction: float = 0.35,
    smooth_mm: float = 15.0,
    opening_mm: float = 1.5,
    protect_mm: float = 4.0,
) -> np.ndarray:
    """Refine a template-derived brain mask with intensity and morphology.

    Parameters
    ----------
    image : ndarray (X, Y, Z)
        Bias-corrected magnitude (a residual smooth bias is tolerated).
    mask : ndarray of bool
        Initial brain mask (e.g. warped template mask > 0.5).
    voxel_size : sequence of 3 float
        Voxel size in mm.
    head_mask : ndarray of bool, optional
        The brain mask is restricted to the head.
    band_mm : float
        Width of the band inside the mask edge where dark voxels are removed (mm).
    dark_fraction : float
        Voxels darker than this fraction of the local brain intensity are "not brain".
    smooth_mm : float
        Gaussian sigma (mm) of the local brain intensity estimate.
    opening_mm : float
        Radius of the morphological opening (mm); 0 disables it.
    protect_mm : float
        Radius (mm) of a closing, limited to the initial mask, that restores notches
        narrower than this (dark lesions at the brain surface); 0 disables it.

    Returns
    -------
    ndarray of bool
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float32))
    mask = np.asarray(mask, bool).copy()
    if not mask.any():
        return mask
    vs = np.asarray(voxel_size, dtype=float)
    if head_mask is not None:
        mask &= np.asarray(head_mask, bool)
    # Work inside the bounding box of the mask (plus a margin): same result, faster.
    margin = np.ceil(max(smooth_mm, protect_mm, band_mm) / vs).astype(int) + 2
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = np.zeros(mask.shape, bool)
    out[box] = _refine(
        image[box], mask[box], vs, band_mm, dark_fraction, smooth_mm, opening_mm, protect_mm
    )
    return out


def _refine(image, mask, vs, band_mm, dark_fraction, smooth_mm, opening_mm, protect_mm):
    local = _local_mean(image, mask, vs, smooth_mm)
    depth = ndimage.distance_transform_edt(mask, sampling=vs)
    band = mask & (depth <= band_mm)
    dark = band & (image < dark_fraction * local)
    # Only dark voxels connected to the outside of the mask are peeled off (skull, air);
    # enclosed dark blobs (microbleeds, veins) stay in the brain.
    lab, _ = ndimage.label(dark | ~mask)
    outside_labels = np.unique(lab[~mask])
    peel = dark & np.isin(lab, outside_labels[outside_labels > 0])
    refined = mask & ~peel
    if protect_mm > 0:
        # Closing restores local notches narrower than ``protect_mm`` (e.g. a dark
        # microbleed at the brain surface) but keeps broad peels of skull.
        refined = binary_closing_mm(refined, protect_mm, vs) & mask
    if opening_mm > 0:
        refined = binary_opening_mm(refined, opening_mm, vs)
    lab, n = ndimage.label(refined)
    if n > 1:
        sizes = ndimage.sum(refined, lab, index=np.arange(1, n + 1))
        refined = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(refined)


def extract_brain(
    image: nib.Nifti1Image,
    template_to_subject_xfm,
    *,
    head_mask: nib.Nifti1Image | None = None,
    threshold: float = 0.5,
    refine: bool = True,
    work_mm: float = 1.0,
    **refine_kwargs,
) -> tuple[nib.Nifti1Image, dict]:
    """Brain mask of a subject magnitude image from a template registration.

    Parameters
    ----------
    image : nibabel.Nifti1Image
        Magnitude in subject space (3D; the first volume of a 4D image is used).
    template_to_subject_xfm : path-like
        From :func:`cmbprep.algorithms.registration.register_template_to_subject`.
    head_mask : nibabel.Nifti1Image, optional
        Head mask on the same grid.
    threshold : float
        Threshold of the warped (linearly interpolated) template mask.
    refine : bool
        Apply :func:`refine_brain_mask`.
    work_mm : float
        Approximate voxel size (mm) of the working grid: the image is block-averaged by
        integer factors to about this size, the template mask is warped and refined
        there and the result is linearly interpolated back (threshold 0.5).
    **refine_kwargs
        Passed to :func:`refine_brain_mask`.

    Returns
    -------
    mask : nibabel.Nifti1Image (uint8)
    info : dict
        Parameters and volumes (mL) for the sidecar.
    """
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    data = np.nan_to_num(data)
    voxel_ml = float(np.prod(voxel_sizes(image.affine))) / 1000.0
    head = None
    if head_mask is not None:
        head = np.asarray(head_mask.dataobj) > 0
        if head.shape != data.shape:
            head = None
    data_c, affine_c, head_c, step = _working_grid(data, image.affine, head, work_mm)
    vs_c = voxel_sizes(affine_c)
    prob = warp_template_mask(nib.Nifti1Image(data_c, affine_c), template_to_subject_xfm)
    mask_c = prob > threshold
    info = {
        "method": "ICBM152 brain mask warped by the template registration"
        + (", refined by intensity and morphology" if refine else ""),
        "threshold": threshold,
        "template_mask_volume_ml": round(float(mask_c.sum()) * float(np.prod(vs_c)) / 1000, 2),
        "working_voxel_size_mm": [round(float(v), 3) for v in vs_c],
    }
    if refine:
        mask_c = refine_brain_mask(data_c, mask_c, vs_c, head_mask=head_c, **refine_kwargs)
        info["refinement"] = {**REFINEMENT_DEFAULTS, **refine_kwargs}
    if step is not None:
        mask = upsample_linear(mask_c.astype(np.float32), step, data.shape) > 0.5
    else:
        mask = mask_c
    if refine and head is not None:
        mask &= head
    info["brain_volume_ml"] = round(float(mask.sum()) * voxel_ml, 2)
    out = nib.Nifti1Image(mask.astype(np.uint8), image.affine)
    out.set_data_dtype(np.uint8)
    return out, info


def _working_grid(data: np.ndarray, affine, head, work_mm: float):
    """Block means of the image (and of the head mask, > 0.5) over whole voxels, on a
    grid of about ``work_mm``.

    The template mask has 1 mm detail, and morphology on ~1 mm voxels is many times
    faster than on sub-millimetre SWI voxels; the result is interpolated back (linear,
    > 0.5). Returns ``data, affine, head, step`` (``step`` None: the input grid is
    already coarse enough and is used as it is).
    """
    step = block_factors(voxel_sizes(affine), work_mm, rounding="round")
    if not any(s > 1 for s in step):
        return data, np.asarray(affine), head, None
    data_c = block_reduce(data, step, dtype=np.float32)
    head_c = None
    if head is not None:
        head_c = block_reduce(head.astype(np.float32), step, dtype=np.float32) > 0.5
    return data_c, coarse_affine(affine, step), head_c, step
