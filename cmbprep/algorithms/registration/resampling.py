"""Images between grids: nibabel <-> ANTs images, whole-voxel block grids and isotropic
resampling (the working resolution of the registration)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from ..arrays import block_factors, block_reduce, voxel_sizes

_LPS = np.diag([-1.0, -1.0, 1.0])


def to_ants(img: nib.Nifti1Image, dtype=np.float32):
    """nibabel image -> ANTs image (physical space preserved, oblique affines ok)."""
    import ants

    data = np.asarray(img.dataobj, dtype=dtype)
    affine = np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction_ras = affine[:3, :3] / spacing
    direction = _LPS @ direction_ras
    origin = _LPS @ affine[:3, 3]
    return ants.from_numpy(
        data, origin=tuple(origin), spacing=tuple(spacing), direction=direction
    )


def to_nibabel(image, dtype=None) -> nib.Nifti1Image:
    """ANTs image -> nibabel image."""
    direction = _LPS @ np.asarray(image.direction)
    spacing = np.asarray(image.spacing)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = _LPS @ np.asarray(image.origin)
    data = image.numpy()
    if dtype is not None:
        data = data.astype(dtype)
    return nib.Nifti1Image(data, affine)


def finite_3d(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """float32 copy with NaN/inf set to 0 (first volume of a 4D image)."""
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    return nib.Nifti1Image(data, img.affine)


def coarse_affine(affine: np.ndarray, step) -> np.ndarray:
    """Affine of the grid whose voxel ``k`` is the block ``[k*s, (k+1)*s)`` of the fine
    grid (centre at fine index ``k*s + (s-1)/2``)."""
    step = np.asarray(step, float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(step)
    scale[:3, 3] = (step - 1.0) / 2.0
    return np.asarray(affine, float) @ scale


def resample_to_resolution(img: nib.Nifti1Image, resolution_mm: float, interp: str = "linear"):
    """Resample an image to isotropic ``resolution_mm`` (keeps orientation and extent)."""
    import ants

    a = to_ants(img)
    interp_type = {"linear": 0, "nearest": 1}[interp]
    out = ants.resample_image(a, (resolution_mm,) * 3, use_voxels=False, interp_type=interp_type)
    return to_nibabel(out)


def block_average_to_resolution(data: np.ndarray, affine, resolution_mm: float):
    """Block means over whole voxels no larger than ``resolution_mm`` (float32).

    An anti-aliasing box filter before resampling to ``resolution_mm``, which also keeps
    the full-resolution image out of ANTs.

    Returns
    -------
    nibabel.Nifti1Image
        The block means on the coarse grid (:func:`coarse_affine`).
    """
    step = block_factors(voxel_sizes(affine), resolution_mm)
    means = block_reduce(np.asarray(data), step, dtype=np.float32)
    return nib.Nifti1Image(means, coarse_affine(affine, step))
