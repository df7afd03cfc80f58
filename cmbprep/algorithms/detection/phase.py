"""Phase evidence of the default detector: the image's phase handedness, calibrated on
its veins, and the dipole pattern around each candidate (paramagnetic microbleed or
diamagnetic calcification).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..arrays import b0_direction, block_factors, block_reduce, box_around, voxel_sizes

__all__ = [
    "dipole_correlation",
    "dipole_field",
    "paramagnetic_phase_sign",
    "vessel_like_mask",
]


def dipole_correlation(phase, weight, center_vox, affine, inner_radius_mm, outer_radius_mm):
    """Correlation of the local phase with the field pattern of a point dipole.

    The template is ``(3 cos^2 theta - 1) / r^3`` around the lesion centre, with
    ``theta`` the angle to the scanner z axis (B0), evaluated on the shell between
    ``inner_radius_mm`` and ``outer_radius_mm`` (the lesion interior, where the
    magnitude is too low for a reliable phase, is excluded).

    Parameters
    ----------
    phase : ndarray
        High-pass filtered phase (rad).
    weight : ndarray
        Non-negative reliability weight per voxel (e.g. relative magnitude).
    center_vox : sequence of 3 float
    affine : (4, 4) array_like
    inner_radius_mm, outer_radius_mm : float

    Returns
    -------
    float
        Weighted correlation in [-1, 1]. Its sign times the phase handedness (see
        :func:`paramagnetic_phase_sign`) is positive for a paramagnetic source
        (microbleed) and negative for a diamagnetic one (calcification).
    """
    affine = np.asarray(affine, dtype=float)
    voxel_size = voxel_sizes(affine)
    half = [int(np.ceil(outer_radius_mm / v)) for v in voxel_size]
    center = np.asarray(center_vox, dtype=float)
    ic = np.rint(center).astype(int)
    box = box_around(ic, half, phase.shape)
    grids = np.meshgrid(
        *[np.arange(b.start, b.stop) - c for b, c in zip(box, center)], indexing="ij"
    )
    offsets = np.stack([g.ravel() for g in grids])  # voxel offsets
    mm = affine[:3, :3] @ offsets  # scanner mm offsets
    r = np.linalg.norm(mm, axis=0)
    shell = (r >= inner_radius_mm) & (r <= outer_radius_mm)
    if shell.sum() < 10:
        return float("nan")
    cos2 = (mm[2, shell] / r[shell]) ** 2
    template = (3 * cos2 - 1) / r[shell] ** 3
    values = np.asarray(phase[box], dtype=float).ravel()[shell]
    w = np.clip(np.asarray(weight[box], dtype=float).ravel()[shell], 0, None)
    if w.sum() <= 0:
        return float("nan")
    values = values - np.sum(w * values) / w.sum()
    template = template - np.sum(w * template) / w.sum()
    den = np.sqrt(np.sum(w * values**2) * np.sum(w * template**2))
    if den <= 0:
        return float("nan")
    return float(np.sum(w * values * template) / den)


def dipole_field(source, voxel_size, b0_direction):
    """Field (relative units) produced by a susceptibility map, via the k-space dipole.

    ``D(k) = 1/3 - (k . b)^2 / |k|^2`` with ``b`` the B0 unit vector expressed along the
    array axes and ``k`` in cycles/mm. Positive ``source`` gives a positive field along
    B0 and a negative one in the equatorial plane.
    """
    source = np.asarray(source, dtype=np.float32)
    freqs = [np.fft.fftfreq(n, d=v) for n, v in zip(source.shape[:-1], voxel_size[:-1])]
    freqs.append(np.fft.rfftfreq(source.shape[-1], d=voxel_size[-1]))
    kx, ky, kz = np.meshgrid(*freqs, indexing="ij", sparse=True)
    b = np.asarray(b0_direction, dtype=float)
    b = b / np.linalg.norm(b)
    k2 = kx**2 + ky**2 + kz**2
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = 1.0 / 3.0 - kb**2 / k2
    kernel[0, 0, 0] = 0.0
    field = np.fft.irfftn(np.fft.rfftn(source) * kernel, s=source.shape, axes=(0, 1, 2))
    return field.astype(np.float32)


def paramagnetic_phase_sign(phase, dark_mask, brain_mask, affine, *, downsample_mm=1.0):
    """Sign of the filtered phase produced by a paramagnetic (positive) source.

    Phase handedness differs between scanners and processing conventions. Veins are
    paramagnetic and are the bulk of the dark structures on SWI, so the sign of the
    correlation between the observed phase and the field predicted from the dark-
    structure mask (with positive susceptibility) gives the convention of this image.

    Parameters
    ----------
    phase : ndarray
        Filtered phase (rad).
    dark_mask : ndarray of bool
        Dark structures (veins and lesions).
    brain_mask : ndarray of bool
    affine : (4, 4) array_like
    downsample_mm : float, optional
        Work at roughly this voxel size (block averages) for speed.

    Returns
    -------
    sign : int
        +1 or -1 (0 when undetermined: no dark voxels or no correlation).
    correlation : float
        Correlation between the predicted field and the phase in the brain outside
        the dark mask.
    """
    affine = np.asarray(affine, dtype=float)
    voxel_size = voxel_sizes(affine)
    factors = block_factors(voxel_size, downsample_mm, rounding="round")
    brain = np.asarray(brain_mask, dtype=bool)

    def block(arr):  # float32 block means, partial blocks at the far edges dropped
        return block_reduce(np.asarray(arr, dtype=np.float32), factors, "mean",
                            edges="truncate", dtype=np.float32)

    source = block(dark_mask)
    if source.sum() <= 0:
        return 0, float("nan")
    small_phase = block(np.where(brain, phase, 0))
    small_brain = block(brain) > 0.99
    small_dark = block(dark_mask) > 0
    pad = [(8, 8)] * 3
    field = dipole_field(np.pad(source, pad), voxel_size * np.asarray(factors),
                         b0_direction(affine))
    field = field[8:-8, 8:-8, 8:-8]
    near = ndi.binary_dilation(source > 0, iterations=4)  # about 4 mm around the source
    use = small_brain & near & ~ndi.binary_dilation(small_dark)
    if use.sum() < 50:
        return 0, float("nan")
    a = field[use] - field[use].mean()
    p = small_phase[use] - small_phase[use].mean()
    den = np.sqrt(np.sum(a**2) * np.sum(p**2))
    if den <= 0:
        return 0, float("nan")
    corr = float(np.sum(a * p) / den)
    return (1 if corr > 0 else -1), corr


def vessel_like_mask(dark_mask, voxel_size, *, min_elongation=3.0, min_length_mm=4.0):
    """Connected dark structures that are elongated (vessel-like).

    Parameters
    ----------
    dark_mask : ndarray of bool
    voxel_size : tuple of float
        mm.
    min_elongation : float, optional
        Minimum square root of the ratio of the largest to the middle eigenvalue of the
        component's physical second-moment matrix.
    min_length_mm : float, optional
        Minimum length (4 x the standard deviation along the main axis).

    Returns
    -------
    ndarray of bool
    """
    labels, count = ndi.label(dark_mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros(dark_mask.shape, bool)
    flat = labels.ravel()
    idx = np.nonzero(flat)[0]
    lab = flat[idx]
    coords = np.unravel_index(idx, labels.shape)
    coords = [c.astype(np.float64) * v for c, v in zip(coords, voxel_size)]
    n = np.bincount(lab, minlength=count + 1).astype(float)
    n[0] = 1
    means = [np.bincount(lab, c, count + 1) / n for c in coords]
    moments = np.zeros((count + 1, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            m = np.bincount(lab, coords[a] * coords[b], count + 1) / n - means[a] * means[b]
            moments[:, a, b] = moments[:, b, a] = m
    moments += np.diag(np.asarray(voxel_size, float) ** 2 / 12.0)
    eig = np.linalg.eigvalsh(moments)  # ascending
    elong = np.sqrt(eig[:, 2] / np.maximum(eig[:, 1], 1e-9))
    length = 4 * np.sqrt(eig[:, 2])
    keep = (elong >= min_elongation) & (length >= min_length_mm) & (n >= 5)
    keep[0] = False
    return keep[labels]
