"""Applying ANTs transform files: images onto another grid, template labels onto the
subject, and points between subject and template space (RAS+ mm outside, LPS inside).

ANTs maps points in the opposite direction to images: the transform that resamples
template images into subject space (``template_to_subject_xfm``) maps *subject points to
template points*, so :func:`points_to_template` takes ``template_to_subject_xfm``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .resampling import to_ants, to_nibabel


def apply_transform(
    moving: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    transforms,
    *,
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> nib.Nifti1Image:
    """Resample ``moving`` onto ``reference``'s grid through ANTs transform files.

    ``transforms`` are applied the ANTs way (last in the list first).
    ``interpolation`` is an ANTs name: ``linear``, ``nearestNeighbor``,
    ``genericLabel``...
    """
    import ants

    if isinstance(transforms, (str, Path)):
        transforms = [transforms]
    out = ants.apply_transforms(
        fixed=to_ants(reference),
        moving=to_ants(moving),
        transformlist=[str(t) for t in transforms],
        interpolator=interpolation,
        defaultvalue=default_value,
    )
    return to_nibabel(out)


def resample_labels_to_subject(
    labels: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    template_to_subject_xfm: str | Path,
    *,
    interpolation: str = "nearestNeighbor",
) -> nib.Nifti1Image:
    """Warp a template-space label image onto the subject grid.

    Parameters
    ----------
    labels : nibabel.Nifti1Image
        Integer labels in template space.
    reference : nibabel.Nifti1Image
        Subject image defining the output grid (3D; first volume used if 4D).
    template_to_subject_xfm : path-like
        Composite transform from
        :func:`~cmbprep.algorithms.registration.register_template_to_subject`.
    interpolation : str
        ``nearestNeighbor`` (fast) or ``genericLabel`` (smoother boundaries, slower).

    Returns
    -------
    nibabel.Nifti1Image
        uint8/uint16 labels on the reference grid (0 outside the warped template and
        outside the reference field of view).
    """
    ref = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    src = nib.Nifti1Image(np.asarray(labels.dataobj, np.float32), labels.affine)
    out = apply_transform(src, ref, template_to_subject_xfm, interpolation=interpolation)
    data = np.rint(np.asarray(out.dataobj)).astype(np.int32)
    dtype = np.uint8 if data.max() < 256 else np.uint16
    img = nib.Nifti1Image(data.astype(dtype), reference.affine)
    img.set_data_dtype(dtype)
    return img


def map_points(points_ras_mm, transform: str | Path) -> np.ndarray:
    """Map scanner RAS+ mm points through an ANTs transform file.

    ANTs maps points opposite to images: a transform that resamples images of space B
    onto space A maps points of A to points of B.

    Parameters
    ----------
    points_ras_mm : array-like (N, 3)
    transform : path-like

    Returns
    -------
    ndarray (N, 3)
    """
    import ants
    import pandas as pd

    pts = np.atleast_2d(np.asarray(points_ras_mm, dtype=float))
    if pts.size == 0:
        return np.zeros((0, 3))
    if pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {pts.shape}")
    df = pd.DataFrame({"x": -pts[:, 0], "y": -pts[:, 1], "z": pts[:, 2]})
    out = ants.apply_transforms_to_points(3, df, [str(transform)], whichtoinvert=[False])
    res = out[["x", "y", "z"]].to_numpy(dtype=float)
    res[:, :2] *= -1
    return res


def points_to_template(points_ras_mm, template_to_subject_xfm: str | Path) -> np.ndarray:
    """Map subject scanner RAS+ mm points to template (MNI) RAS+ mm.

    ANTs maps points opposite to images: the transform that resamples template images
    into subject space (``template_to_subject_xfm``, ``..._from-<template>_to-swi_...``)
    maps subject points to template points. Conversion RAS <-> LPS is done here.

    Parameters
    ----------
    points_ras_mm : array-like (N, 3)
    template_to_subject_xfm : path-like

    Returns
    -------
    ndarray (N, 3)
    """
    return map_points(points_ras_mm, template_to_subject_xfm)


def points_to_subject(points_mni_mm, subject_to_template_xfm: str | Path) -> np.ndarray:
    """Map template (MNI) RAS+ mm points to subject scanner RAS+ mm.

    Uses the transform that resamples subject images into template space
    (``subject_to_template_xfm``), following the ANTs point/image rule.
    """
    return map_points(points_mni_mm, subject_to_template_xfm)
