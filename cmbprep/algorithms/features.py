"""Per-candidate features for microbleed detection.

All features are in physical units (mm, mm^2, mm^3) or are dimensionless ratios, so
they transfer across voxel sizes. See ``docs/detection.rst`` for definitions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "dipole_correlation",
    "dipole_field",
    "hessian_blob_ratio",
    "paramagnetic_phase_sign",
    "shape_features",
    "slice_features",
    "surrounding_dark_fraction",
    "vessel_like_mask",
]


def _coords_mm(region, box, voxel_size):
    idx = np.argwhere(region).astype(float)
    offset = np.array([b.start for b in box], dtype=float)
    return (idx + offset) * np.asarray(voxel_size, dtype=float), idx + offset


def shape_features(region, box, voxel_size, b0_direction=None, *, surface=True):
    """Size and shape of a segmented lesion.

    Parameters
    ----------
    region : ndarray of bool
        Lesion voxels inside ``box``.
    box : tuple of slice
        Position of ``region`` in the full image.
    voxel_size : tuple of float
        mm.

    Returns
    -------
    dict
        ``centroid_vox`` (3 floats, full-image voxel coordinates), ``volume_mm3``,
        ``diameter_mm`` (diameter of the sphere of equal volume), ``elongation``
        (square root of the ratio of the largest to the smallest eigenvalue of the
        physical second-moment matrix, voxel extent included; 1 for a sphere),
        ``sphericity`` (pi^(1/3) (6V)^(2/3) / surface area from marching cubes;
        1 for a sphere, lower for tubes and irregular shapes). With
        ``b0_direction`` (scanner z along the array axes, see
        :func:`b0_direction_from_affine`) also ``elongation_perp_b0`` (the same ratio
        in the plane perpendicular to B0: blooming stretches microbleeds along B0,
        not across it) and ``b0_aspect`` (standard deviation along B0 over the mean
        standard deviation across it). ``surface=False`` skips the surface mesh
        (``sphericity`` is then ``nan``).
    """
    voxel_size = np.asarray(voxel_size, dtype=float)
    points_mm, points_vox = _coords_mm(region, box, voxel_size)
    n_vox = len(points_mm)
    volume = n_vox * float(np.prod(voxel_size))
    diameter = (6.0 * volume / np.pi) ** (1.0 / 3.0)
    centroid_vox = points_vox.mean(axis=0)
    cov = np.cov(points_mm.T) if n_vox > 1 else np.zeros((3, 3))
    cov = cov + np.diag(voxel_size**2 / 12.0)
    eig = np.clip(np.linalg.eigvalsh(cov), 1e-9, None)
    elongation = float(np.sqrt(eig[-1] / eig[0]))
    extra = {}
    if b0_direction is not None:
        b = np.asarray(b0_direction, float)
        b = b / np.linalg.norm(b)
        # orthonormal basis of the plane perpendicular to b
        helper = np.eye(3)[int(np.argmin(np.abs(b)))]
        u = np.cross(b, helper)
        u /= np.linalg.norm(u)
        w = np.cross(b, u)
        plane = np.stack([u, w])
        cov2 = plane @ cov @ plane.T
        eig2 = np.clip(np.linalg.eigvalsh(cov2), 1e-9, None)
        extra["elongation_perp_b0"] = float(np.sqrt(eig2[-1] / eig2[0]))
        extra["b0_aspect"] = float(np.sqrt(b @ cov @ b / np.mean(eig2)))
    sphericity = np.nan
    try:
        if not surface:
            raise ValueError("surface not requested")
        from skimage.measure import marching_cubes, mesh_surface_area

        padded = np.pad(region.astype(np.float32), 1)
        padded = ndi.gaussian_filter(padded, 0.5)
        verts, faces, _, _ = marching_cubes(padded, 0.5 * padded.max(), spacing=tuple(voxel_size))
        area = mesh_surface_area(verts, faces)
        if area > 0:
            sphericity = float(min(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area, 1.0))
    except (ValueError, RuntimeError):
        pass
    return {
        "centroid_vox": centroid_vox,
        "volume_mm3": volume,
        "diameter_mm": diameter,
        "elongation": elongation,
        "sphericity": sphericity,
        **extra,
    }


def slice_features(region, box, voxel_size, slice_axis):
    """Per-slice geometry of a lesion (as a rater scrolls through slices).

    Returns
    -------
    dict
        ``n_slices`` (slices the lesion appears on), ``extent_across_slices_mm``,
        ``max_slice_area_mm2``, ``circularity`` (4 pi A / P^2 on the slice with the
        largest area, perimeter from scikit-image), ``centroid_shift_mm`` (largest
        in-plane displacement of the slice centroid between consecutive slices).
    """
    from skimage.measure import perimeter

    voxel_size = np.asarray(voxel_size, dtype=float)
    moved = np.moveaxis(region, slice_axis, 0)
    in_plane = np.delete(voxel_size, slice_axis)
    pixel_area = float(np.prod(in_plane))
    present = [k for k in range(moved.shape[0]) if moved[k].any()]
    areas, centroids = [], []
    for k in present:
        pix = np.argwhere(moved[k])
        areas.append(len(pix) * pixel_area)
        centroids.append(pix.mean(axis=0) * in_plane)
    best = present[int(np.argmax(areas))]
    slice_img = moved[best]
    area_px = slice_img.sum()
    perim = perimeter(slice_img, neighborhood=4) if area_px > 1 else 0.0
    # perimeter in pixel units; for square pixels circularity is unit-free
    if perim > 0:
        circularity = float(min(4 * np.pi * area_px / perim**2, 1.0))
    else:
        circularity = 1.0
    shifts = [
        float(np.linalg.norm(centroids[i + 1] - centroids[i]))
        for i in range(len(centroids) - 1)
        if present[i + 1] == present[i] + 1
    ]
    return {
        "n_slices": len(present),
        "extent_across_slices_mm": len(present) * float(voxel_size[slice_axis]),
        "max_slice_area_mm2": float(max(areas)),
        "circularity": circularity,
        "centroid_shift_mm": max(shifts) if shifts else 0.0,
    }


def hessian_blob_ratio(image, center_vox, voxel_size, sigma_mm):
    """Ratio of the smallest to the largest Hessian eigenvalue at a point.

    The Hessian of the Gaussian-smoothed image (standard deviation ``sigma_mm``) is
    computed in physical units on a small patch. At the centre of a dark sphere all
    three eigenvalues are positive and equal (ratio 1); at the centre of a dark tube
    one eigenvalue is about 0 (ratio about 0); negative ratios mean a saddle.

    Returns
    -------
    float
        ``lambda_min / lambda_max`` (``nan`` when ``lambda_max <= 0``).
    """
    voxel_size = np.asarray(voxel_size, dtype=float)
    half = [max(3, int(np.ceil(4 * sigma_mm / v)) + 1) for v in voxel_size]
    center = np.rint(center_vox).astype(int)
    box = tuple(
        slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(center, half, image.shape)
    )
    patch = ndi.gaussian_filter(
        np.asarray(image[box], dtype=np.float64), sigma_mm / voxel_size, mode="nearest"
    )
    local = tuple(int(c - b.start) for c, b in zip(center, box))
    grads = np.gradient(patch, *voxel_size)
    hess = np.empty((3, 3))
    for a in range(3):
        second = np.gradient(grads[a], *voxel_size)
        for b in range(3):
            hess[a, b] = second[b][local]
    hess = 0.5 * (hess + hess.T)
    eig = np.linalg.eigvalsh(hess)
    if eig[-1] <= 0:
        return float("nan")
    return float(eig[0] / eig[-1])


def surrounding_dark_fraction(image, center_vox, radius_mm, voxel_size, level, *,
                              inner_gap_mm=1.0, shell_mm=2.0):
    """Fraction of a spherical shell around a lesion that is darker than ``level``.

    The shell spans ``radius_mm + inner_gap_mm`` to ``radius_mm + inner_gap_mm +
    shell_mm``. An isolated microbleed has dark blooming only inside its radius (low
    fraction); a vessel continues through the shell (higher fraction).
    """
    voxel_size = np.asarray(voxel_size, dtype=float)
    outer = radius_mm + inner_gap_mm + shell_mm
    half = [int(np.ceil(outer / v)) for v in voxel_size]
    center = np.asarray(center_vox, dtype=float)
    ic = np.rint(center).astype(int)
    box = tuple(
        slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(ic, half, image.shape)
    )
    grids = np.meshgrid(
        *[(np.arange(b.start, b.stop) - c) * v for b, c, v in zip(box, center, voxel_size)],
        indexing="ij",
    )
    dist = np.sqrt(sum(g**2 for g in grids))
    shell = (dist >= radius_mm + inner_gap_mm) & (dist <= outer)
    if not shell.any():
        return float("nan")
    return float((np.asarray(image[box])[shell] <= level).mean())


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
    voxel_size = np.asarray(
        np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), dtype=float
    )
    half = [int(np.ceil(outer_radius_mm / v)) for v in voxel_size]
    center = np.asarray(center_vox, dtype=float)
    ic = np.rint(center).astype(int)
    box = tuple(
        slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(ic, half, phase.shape)
    )
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
    return np.fft.irfftn(np.fft.rfftn(source) * kernel, s=source.shape, axes=(0, 1, 2)).astype(np.float32)


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
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factors = [max(1, int(round(downsample_mm / v))) for v in voxel_size]
    brain = np.asarray(brain_mask, dtype=bool)

    def block(arr):
        arr = np.asarray(arr, dtype=np.float32)
        shape = [n // f * f for n, f in zip(arr.shape, factors)]
        arr = arr[: shape[0], : shape[1], : shape[2]]
        return arr.reshape(
            shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1],
            shape[2] // factors[2], factors[2],
        ).mean(axis=(1, 3, 5))

    source = block(dark_mask)
    if source.sum() <= 0:
        return 0, float("nan")
    small_phase = block(np.where(brain, phase, 0))
    small_brain = block(brain) > 0.99
    small_dark = block(dark_mask) > 0
    pad = [(8, 8)] * 3
    field = dipole_field(np.pad(source, pad), voxel_size * np.asarray(factors),
                         b0_direction_from_affine(affine))
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


def b0_direction_from_affine(affine):
    """Scanner z (B0) unit vector expressed along the array axes (for :func:`dipole_field`)."""
    affine = np.asarray(affine, dtype=float)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    directions = affine[:3, :3] / sizes
    return directions[2] / np.linalg.norm(directions[2])


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
