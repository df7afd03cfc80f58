"""Context features of a candidate: does the dark spot continue as a vessel beyond the
lesion, is its neighbourhood tubular, and is its phase the field of a sphere or of a
cylinder?

Everything is computed on a small patch around the candidate (no whole-volume
filter), in physical units (mm, along the array axes), so the features do not depend
on the voxel size or the voxel count. The relative intensity is resampled trilinearly
on an isotropic 0.5 mm grid (cube of half-width ``lesion radius + 5`` mm, at least
5.5 mm; the lesion radius is capped at 4 mm), which makes anisotropic voxels (e.g.
0.5x0.5x1 or 0.9x0.9x2 mm) behave like isotropic ones.

*Dark* means, on that grid smoothed with a 0.5 mm Gaussian, below ``background -
depth_fraction * (background - darkest)`` with ``darkest`` the smoothed minimum
within the lesion radius of the centre (if ``background - darkest`` is below 0.1,
nothing is dark and the continuation features are 0). The detector passes its
quarter depth, ``shallow_fraction``: a continuation at the lesion's half depth would
already be part of the segmented lesion. Rays are cast from the centre along 256 directions
(128 antipodal pairs, Fibonacci lattice) plus the Hessian tube axis, sampled every
0.5 mm; a ray's *dark run* is the distance from the centre to its last sample before
the first non-dark one (0 when the centre is not dark).

Features (one column each in the candidate table; :mod:`.analysis` computes them for
the candidates that pass screening, like the other costly features, ``n/a`` for the
others; about 2 ms per candidate):

- ``continuation_fraction``: fraction of the 256 ray directions whose dark run
  reaches 3 mm beyond the lesion radius (0 for an isolated sphere, a few per cent for
  a vessel crossing the lesion, large inside a dark region).
- ``continuation_axiality``: ``(3 lambda_max - 1) / 2`` of the orientation tensor of
  the ray directions weighted by their dark run beyond the lesion radius + 0.5 mm
  (1: the dark voxels outside the lesion lie along one axis, as for a vessel;
  about 0: isotropic or none).
- ``tube_length_mm``: longest dark run through the centre, both sides added, over
  the antipodal ray pairs (each side at most 5 mm, so at most 10 mm); about the
  diameter for a sphere, 10 mm for a vessel.
- ``vesselness_max_shell``: maximum Frangi vesselness (dark tubes on a bright
  background; alpha = beta = 0.5, c = 0.03 on the sigma^2-normalised Hessian of the
  relative intensity) at sigma = 0.5, 0.8 and 1.2 mm in the shell 1-4 mm outside the
  lesion radius; in [0, 1].
- ``blob_vs_vessel``: at the centre and the scale of largest normalised Laplacian,
  with Hessian eigenvalues e1 <= e2 <= e3, ``ln((max(e1, 0) + eps) / (max(e2, 0) -
  max(e1, 0) + eps))``, ``eps = 0.05 |e3|``: about +3 for a dark blob, -3 for a dark
  tube, 0 for neither.
- ``dipole_fit_r2``: with filtered phase, weighted (relative intensity clipped to
  [0, 1.5]) least-squares fit of the phase in the shell from the lesion radius +
  0.5 mm to the lesion radius + 4 mm by ``A (3 cos^2 theta - 1) / r^3 + c`` (theta
  to B0), dark voxels (below the dark level above, on the unsmoothed image) left
  out; coefficient of determination (``n/a`` without phase).
- ``cylinder_fit_r2``: the same with an infinite cylinder along the candidate's axis
  (principal axis of the dark rays' orientation tensor, else the Hessian tube axis):
  ``sin^2(alpha) cos(2 phi) (R / rho)^2 / 2`` outside, ``(3 cos^2 alpha - 1) / 6``
  inside (alpha: axis to B0, phi: azimuth around the axis from the projection of B0,
  rho: distance to the axis, R: the lesion radius, at least 0.3 mm).
- ``dipole_vs_cylinder``: ``dipole_fit_r2 - cylinder_fit_r2`` (> 0: the phase looks
  like a sphere's).
- ``dipole_amplitude_snr``: the sphere fit's signal (|A| times the weighted standard
  deviation of the template) over the residual's weighted standard deviation, signed
  by the paramagnetic direction (amplitude times the phase handedness): > 0
  paramagnetic (microbleed), < 0 diamagnetic (calcification); clipped to +-100.
- ``dipole_phase_at_radius``: the sphere fit's phase (rad) at the lesion radius R in
  the plane perpendicular to B0, ``|A| / R^3`` (R at least 0.5 mm), signed as
  ``dipole_amplitude_snr``; clipped to +-20. Dimensionless and independent of B0, TE
  and voxel size: where a lesion is dark *because of* its field (a microbleed's
  blooming: the dephasing reaches the dark edge), the field at the edge is of the order
  of a radian; where the darkness is the structure itself (blood in a tangle of small
  veins, partial volume), the field at its edge is much weaker.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "CONTEXT_FEATURES",
    "PHASE_CONTEXT_FEATURES",
    "context_features",
    "continuation_features",
    "cylinder_template",
    "dipole_template",
    "phase_fit_features",
    "ray_directions",
    "vesselness_features",
]

#: Columns added by :func:`context_features` (phase ones ``nan`` without phase).
CONTEXT_FEATURES = (
    "continuation_fraction",
    "continuation_axiality",
    "tube_length_mm",
    "vesselness_max_shell",
    "blob_vs_vessel",
    "dipole_fit_r2",
    "cylinder_fit_r2",
    "dipole_vs_cylinder",
    "dipole_amplitude_snr",
    "dipole_phase_at_radius",
)
PHASE_CONTEXT_FEATURES = CONTEXT_FEATURES[5:]

GRID_MM = 0.5  # isotropic resampling step
SMOOTH_MM = 0.5  # smoothing of the dark test
RAY_STEP_MM = 0.5
CONTINUATION_MM = 3.0  # a ray continues if dark this far beyond the lesion radius
TUBE_SIDE_MM = 5.0  # tube length: at most this on each side of the centre
VESSEL_SIGMAS_MM = (0.5, 0.8, 1.2)
SHELL_MM = (1.0, 4.0)  # vesselness shell, outside the lesion radius
FRANGI_ALPHA = FRANGI_BETA = 0.5
FRANGI_C = 0.03
MIN_DEPTH = 0.1  # the smoothed centre must be this much darker than the background
MAX_RADIUS_MM = 4.0  # lesion radius cap (patch size)
PHASE_INNER_MM, PHASE_OUTER_MM = 0.5, 4.0  # phase shell, outside the lesion radius
MIN_EDGE_RADIUS_MM = 0.5  # dipole_phase_at_radius: smallest radius R
EDGE_PHASE_CLIP = 20.0  # rad


def ray_directions(n_pairs=128):
    """Unit vectors: ``n_pairs`` on a Fibonacci half-sphere, then their antipodes.

    Returns
    -------
    (2 n_pairs, 3) ndarray
        Row ``i + n_pairs`` is ``-row i``.
    """
    k = np.arange(n_pairs) + 0.5
    z = 1.0 - k / n_pairs  # (0, 1]: upper half-sphere
    phi = np.pi * (1.0 + 5**0.5) * k
    s = np.sqrt(1.0 - z**2)
    half = np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)
    return np.concatenate([half, -half])


_DIRECTIONS = ray_directions()


def _sym_eigvals(hxx, hyy, hzz, hxy, hxz, hyz):
    """Eigenvalues (ascending, last axis) of symmetric 3x3 matrices, closed form."""
    q = (hxx + hyy + hzz) / 3.0
    p1 = hxy**2 + hxz**2 + hyz**2
    p2 = (hxx - q) ** 2 + (hyy - q) ** 2 + (hzz - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    ps = np.where(p > 1e-12, p, 1.0)
    a, b, c = (hxx - q) / ps, (hyy - q) / ps, (hzz - q) / ps
    d, e, f = hxy / ps, hxz / ps, hyz / ps
    det = a * (b * c - f * f) - d * (d * c - f * e) + e * (d * f - b * e)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    e3 = q + 2.0 * p * np.cos(phi)
    e1 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    return np.stack([e1, e2, e3], axis=-1)


def _frangi_dark(eig):
    """Frangi vesselness of dark tubes from ascending eigenvalues (..., 3) of the
    normalised Hessian: the two largest in magnitude must be positive, i.e.
    ``e2 > 0`` and ``|e1| <= e2`` (then ``|e1| <= e2 <= e3`` in magnitude)."""
    e1, e2, e3 = eig[..., 0], eig[..., 1], eig[..., 2]
    valid = (e2 > 0) & (np.abs(e1) <= e2)
    l1 = np.abs(e1)
    l2 = np.where(valid, e2, 1.0)
    l3 = np.where(valid, e3, 1.0)
    ra2 = (l2 / l3) ** 2
    rb2 = l1**2 / (l2 * l3)
    s2 = l1**2 + l2**2 + l3**2
    v = ((1 - np.exp(-ra2 / (2 * FRANGI_ALPHA**2))) * np.exp(-rb2 / (2 * FRANGI_BETA**2))
         * (1 - np.exp(-s2 / (2 * FRANGI_C**2))))
    return np.where(valid, v, 0.0)


def _hessian_at(cube, flat_idx, h):
    """Central-difference Hessian (6 components) of ``cube`` at the flat indices
    ``flat_idx`` (points away from the border); grid step ``h`` mm."""
    si, sj, sk = (st // cube.itemsize for st in cube.strides)
    offsets = np.array([0, si, -si, sj, -sj, sk, -sk,
                        si + sj, si - sj, sj - si, -si - sj,
                        si + sk, si - sk, sk - si, -si - sk,
                        sj + sk, sj - sk, sk - sj, -sj - sk])
    v = cube.ravel()[flat_idx[None, :] + offsets[:, None]].astype(np.float64)
    f0 = 2 * v[0]
    return np.stack([
        v[1] + v[2] - f0, v[3] + v[4] - f0, v[5] + v[6] - f0,
        (v[7] - v[8] - v[9] + v[10]) / 4.0,
        (v[11] - v[12] - v[13] + v[14]) / 4.0,
        (v[15] - v[16] - v[17] + v[18]) / 4.0,
    ]) / h**2


def _iso_cube(image, center_vox, voxel_size, half_mm):
    """Trilinear resampling of ``image`` on an isotropic ``GRID_MM`` cube centred on
    ``center_vox`` (half-width ``half_mm``), image borders replicated.

    Trilinear interpolation on an axis-aligned grid is separable: one linear
    interpolation along each axis in turn.
    """
    n = int(np.ceil(half_mm / GRID_MM))
    offsets = np.arange(-n, n + 1) * GRID_MM
    coords = [np.clip(c + offsets / v, 0, s - 1)
              for c, v, s in zip(center_vox, voxel_size, image.shape)]
    lo = [int(np.floor(c[0])) for c in coords]
    hi = [min(int(np.floor(c[-1])) + 2, s) for c, s in zip(coords, image.shape)]
    out = np.asarray(image[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float32)
    for ax, (c, a) in enumerate(zip(coords, lo)):
        local = c - a
        i0 = np.minimum(np.floor(local).astype(int), out.shape[ax] - 1)
        i1 = np.minimum(i0 + 1, out.shape[ax] - 1)
        frac = (local - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[ax] = -1
        frac = frac.reshape(shape)
        out = np.take(out, i0, axis=ax) * (1 - frac) + np.take(out, i1, axis=ax) * frac
    return out, n


def vesselness_features(smooth, n, radius_mm):
    """``vesselness_max_shell``, ``blob_vs_vessel`` and the Hessian tube axis (unit
    vector along the array axes, least curvature at the best scale).

    ``smooth`` is the isotropic cube (centre at index ``n``) smoothed at the first
    scale (``VESSEL_SIGMAS_MM[0]`` = ``SMOOTH_MM``). The shell is evaluated on a 1 mm
    lattice through the centre; the larger scales are computed on the cube subsampled
    to 1 mm (incremental smoothing), the first one on the 0.5 mm grid.
    """
    step = 2  # lattice / larger scales: every other 0.5 mm sample
    h_coarse = step * GRID_MM
    p0 = n % step
    coarse = np.ascontiguousarray(smooth[p0::step, p0::step, p0::step])
    nc = (n - p0) // step  # centre on the coarse grid
    size = coarse.shape[0]
    axis = (np.arange(size) - nc) * h_coarse
    r_in, r_out = radius_mm + SHELL_MM[0], radius_mm + SHELL_MM[1]
    inner = axis[1:size - 1]
    d2 = inner[:, None, None] ** 2 + inner[None, :, None] ** 2 + inner[None, None, :] ** 2
    shell = np.argwhere((d2 >= r_in**2) & (d2 <= r_out**2)) + 1
    points = np.concatenate([np.full((1, 3), nc), shell])
    coarse_idx = np.ravel_multi_index(points.T, coarse.shape)
    fine_idx = np.ravel_multi_index((points * step + p0).T, smooth.shape)
    comps = []
    previous = VESSEL_SIGMAS_MM[0]
    for sigma in VESSEL_SIGMAS_MM:
        if sigma == VESSEL_SIGMAS_MM[0]:
            hess = _hessian_at(smooth, fine_idx, GRID_MM)
        else:
            extra = np.sqrt(sigma**2 - previous**2) / h_coarse
            coarse = ndi.gaussian_filter(coarse, extra, mode="nearest", truncate=3.0)
            previous = sigma
            hess = _hessian_at(coarse, coarse_idx, h_coarse)
        comps.append(hess * sigma**2)
    comps = np.stack(comps, axis=1)  # (6 components, scales, points)
    eig = _sym_eigvals(*comps)  # (scales, points, 3)
    best_v = float(_frangi_dark(eig[:, 1:]).max()) if len(shell) else 0.0
    best = int(np.argmax(eig[:, 0].sum(axis=-1)))  # largest normalised Laplacian
    centre_h = comps[:, best, 0]
    hxx, hyy, hzz, hxy, hxz, hyz = centre_h
    hess = np.array([[hxx, hxy, hxz], [hxy, hyy, hyz], [hxz, hyz, hzz]])
    vals, vecs = np.linalg.eigh(hess)
    e1, e2, e3 = vals
    eps = 0.05 * abs(e3) if abs(e3) > 0 else 1e-12
    blob = max(e1, 0.0)
    ratio = float(np.log((blob + eps) / (max(e2, 0.0) - blob + eps)))
    if not np.isfinite(ratio):
        ratio = 0.0
    return {"vesselness_max_shell": best_v, "blob_vs_vessel": ratio}, vecs[:, 0]


def _dark_runs(smooth, n, directions, t, level):
    """Dark run (mm from the centre) along each direction."""
    pts = n + directions[:, :, None] * (t[None, None, :] / GRID_MM)  # (D, 3, T)
    vals = ndi.map_coordinates(smooth, pts.transpose(1, 0, 2).reshape(3, -1), order=1,
                               mode="nearest").reshape(len(directions), len(t))
    dark = vals <= level
    first_bright = np.where(dark.all(axis=1), len(t), np.argmin(dark, axis=1))
    return np.where(first_bright > 0, t[np.maximum(first_bright - 1, 0)], 0.0)


def continuation_features(smooth, n, radius_mm, background, depth_fraction, tube_axis):
    """``continuation_fraction``, ``continuation_axiality``, ``tube_length_mm``, the
    candidate's axis and the dark level, from the smoothed isotropic cube (centre at
    index ``n``)."""
    size = smooth.shape[0]
    axis = (np.arange(size) - n) * GRID_MM
    m = max(int(np.ceil(radius_mm / GRID_MM)), 1)
    near = smooth[n - m:n + m + 1, n - m:n + m + 1, n - m:n + m + 1]
    sub = axis[n - m:n + m + 1]
    d2 = sub[:, None, None] ** 2 + sub[None, :, None] ** 2 + sub[None, None, :] ** 2
    darkest = float(near[d2 <= max(radius_mm, GRID_MM) ** 2].min())
    if not background - darkest >= MIN_DEPTH:  # nothing dark at the centre
        return {"continuation_fraction": 0.0, "continuation_axiality": 0.0,
                "tube_length_mm": 0.0}, tube_axis, -np.inf
    level = background - depth_fraction * (background - darkest)
    t_max = min(max(radius_mm + CONTINUATION_MM, TUBE_SIDE_MM), n * GRID_MM)
    t = np.arange(0.0, t_max + 1e-6, RAY_STEP_MM)
    tube_axis = np.asarray(tube_axis, float) / np.linalg.norm(tube_axis)
    dirs = np.concatenate([_DIRECTIONS, tube_axis[None], -tube_axis[None]])
    runs = _dark_runs(smooth, n, dirs, t, level)
    ray_runs = runs[: len(_DIRECTIONS)]
    reach = radius_mm + CONTINUATION_MM
    needed = t[t <= reach + 1e-6][-1] if reach <= t[-1] else t[-1]
    fraction = float(np.mean(ray_runs >= needed - 1e-6))
    weights = np.clip(ray_runs - radius_mm - 0.5, 0.0, None)
    axiality = 0.0
    if weights.sum() > 0:
        tensor = (_DIRECTIONS * weights[:, None]).T @ _DIRECTIONS / weights.sum()
        vals, vecs = np.linalg.eigh(tensor)
        axiality = float(np.clip((3 * vals[-1] - 1) / 2, 0.0, 1.0))
        tube_axis = vecs[:, -1]
    side = np.minimum(runs, TUBE_SIDE_MM)
    n_pairs = len(_DIRECTIONS) // 2
    pairs = np.concatenate([side[:n_pairs] + side[n_pairs:2 * n_pairs],
                            side[-2:-1] + side[-1:]])
    return {"continuation_fraction": fraction, "continuation_axiality": axiality,
            "tube_length_mm": float(pairs.max())}, tube_axis, level


def dipole_template(offsets_mm, b0):
    """Sphere (point dipole) field pattern ``(3 cos^2 theta - 1) / r^3`` at offsets
    (N, 3) mm along the array axes; ``b0`` the B0 unit vector along those axes."""
    r = np.linalg.norm(offsets_mm, axis=1)
    cos2 = (offsets_mm @ b0 / r) ** 2
    return (3 * cos2 - 1) / r**3


def cylinder_template(offsets_mm, b0, axis, radius_mm):
    """Infinite-cylinder field pattern along ``axis``: ``sin^2(alpha) cos(2 phi)
    (R / rho)^2 / 2`` outside, ``(3 cos^2 alpha - 1) / 6`` inside (``R`` =
    ``radius_mm``), alpha the axis's angle to B0, phi the azimuth around the axis from
    the projection of B0, rho the distance to the axis (same units as a unit
    susceptibility difference)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cos_a = float(axis @ b0)
    sin2 = max(1.0 - cos_a**2, 0.0)
    perp = offsets_mm - np.outer(offsets_mm @ axis, axis)
    rho2 = np.einsum("ij,ij->i", perp, perp)
    b_perp = b0 - cos_a * axis
    norm = np.linalg.norm(b_perp)
    if norm > 1e-9:
        cos_phi2 = (perp @ (b_perp / norm)) ** 2 / np.where(rho2 > 0, rho2, 1.0)
        cos2phi = 2 * cos_phi2 - 1
    else:
        cos2phi = np.zeros(len(offsets_mm))
    outside = sin2 * cos2phi * radius_mm**2 / np.where(rho2 > 0, rho2, 1.0) / 2
    inside = (3 * cos_a**2 - 1) / 6
    return np.where(rho2 > radius_mm**2, outside, inside)


def _weighted_fit(values, template, w):
    """Weighted least squares ``values ~ A template + c``: (r2, A, snr)."""
    sw = w.sum()
    tv = template - np.sum(w * template) / sw
    vv = values - np.sum(w * values) / sw
    stt = np.sum(w * tv**2)
    svv = np.sum(w * vv**2)
    if stt <= 0 or svv <= 0:
        return 0.0, 0.0, 0.0
    amp = np.sum(w * tv * vv) / stt
    sse = np.sum(w * (vv - amp * tv) ** 2)
    r2 = float(np.clip(1 - sse / svv, 0.0, 1.0))
    signal = abs(amp) * np.sqrt(stt / sw)
    noise = np.sqrt(sse / sw)
    snr = float(min(signal / noise, 100.0)) if noise > 0 else 100.0
    return r2, float(amp), snr


def phase_fit_features(phase, weight, center_vox, voxel_size, radius_mm, b0, axis,
                       phase_sign=1, *, image=None, dark_level=None):
    """``dipole_fit_r2``, ``cylinder_fit_r2``, ``dipole_vs_cylinder``,
    ``dipole_amplitude_snr`` and ``dipole_phase_at_radius`` (see the module
    docstring); ``nan`` without phase or
    with fewer than 10 usable voxels. Voxels of ``image`` at or below ``dark_level``
    (inside a vessel or the lesion's blooming: unreliable phase, and where the
    cylinder's inside/outside boundary is uncertain) are left out of both fits."""
    nan = {k: float("nan") for k in PHASE_CONTEXT_FEATURES}
    if phase is None:
        return nan
    voxel_size = np.asarray(voxel_size, float)
    inner, outer = radius_mm + PHASE_INNER_MM, radius_mm + PHASE_OUTER_MM
    center = np.asarray(center_vox, float)
    ic = np.rint(center).astype(int)
    half = np.ceil(outer / voxel_size).astype(int)
    lo = np.maximum(ic - half, 0)
    hi = np.minimum(ic + half + 1, phase.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    axes = [(np.arange(a, b) - c) * v for a, b, c, v in zip(lo, hi, center, voxel_size)]
    grids = np.meshgrid(*axes, indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    r = np.linalg.norm(off, axis=1)
    shell = (r >= inner) & (r <= outer)
    if image is not None and dark_level is not None:
        shell &= np.asarray(image[box], float).ravel() > dark_level
    if weight is None:
        w = np.ones(int(shell.sum()))
    else:
        w = np.clip(np.asarray(weight[box], float).ravel()[shell], 0.0, 1.5)
    if shell.sum() < 10 or w.sum() <= 0:
        return nan
    off = off[shell]
    values = np.asarray(phase[box], float).ravel()[shell]
    b0 = np.asarray(b0, float) / np.linalg.norm(b0)
    r2_s, amp, snr = _weighted_fit(values, dipole_template(off, b0), w)
    cyl_radius = max(radius_mm, 0.3)
    r2_c, _, _ = _weighted_fit(values, cylinder_template(off, b0, axis, cyl_radius), w)
    sign = np.sign(amp) * (phase_sign if phase_sign else 1)
    edge = abs(amp) / max(radius_mm, MIN_EDGE_RADIUS_MM) ** 3
    return {"dipole_fit_r2": r2_s, "cylinder_fit_r2": r2_c,
            "dipole_vs_cylinder": r2_s - r2_c,
            "dipole_amplitude_snr": float(sign * snr),
            "dipole_phase_at_radius": float(sign * min(edge, EDGE_PHASE_CLIP))}


def context_features(image, center_vox, radius_mm, voxel_size, background, *, b0,
                     depth_fraction=0.25, phase=None, weight=None, phase_sign=1):
    """Every context feature of one candidate (see the module docstring).

    Parameters
    ----------
    image : ndarray
        Relative intensity (tissue about 1, dark structures lower).
    center_vox : sequence of 3 float
        Lesion centroid (voxel coordinates of ``image``).
    radius_mm : float
        Lesion radius (half the equal-volume diameter); capped at 4 mm.
    voxel_size : sequence of 3 float
        mm.
    background : float
        Local background intensity (the segmentation's).
    b0 : (3,) array_like
        B0 direction along the array axes.
    depth_fraction : float, optional
        Dark level as a fraction of the lesion's depth (on the smoothed grid).
    phase, weight : ndarray or None, optional
        Filtered phase (rad, same grid as ``image``) and its reliability weight.
    phase_sign : int, optional
        Sign of the phase of a paramagnetic source (phase handedness).

    Returns
    -------
    dict
        The :data:`CONTEXT_FEATURES`.
    """
    voxel_size = np.asarray(voxel_size, float)
    radius = float(np.clip(radius_mm, 0.0, MAX_RADIUS_MM)) if np.isfinite(radius_mm) else 1.0
    half = max(radius + SHELL_MM[1] + 1.0, TUBE_SIDE_MM + 0.5)
    cube, n = _iso_cube(image, center_vox, voxel_size, half)
    smooth = ndi.gaussian_filter(cube, SMOOTH_MM / GRID_MM, mode="nearest", truncate=3.0)
    vessel, hess_axis = vesselness_features(smooth, n, radius)
    cont, axis, level = continuation_features(smooth, n, radius, float(background),
                                              depth_fraction, hess_axis)
    phase_feats = phase_fit_features(phase, weight, center_vox, voxel_size, radius, b0,
                                     axis, phase_sign, image=image, dark_level=level)
    return {**cont, **vessel, **phase_feats}
