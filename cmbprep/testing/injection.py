"""Simulated lesions injected into real gradient-echo data (issue 11, "real backgrounds").

The physics is the phantom's (:mod:`cmbprep.testing.phantom.lesions`): a lesion is a
uniformly magnetised sphere (radius ``a``, susceptibility ``dchi`` relative to the
surrounding tissue; negative = calcification) whose field outside is

    dB/B0 = dchi/3 (a/r)^3 (3 cos^2(theta) - 1)        (0 inside, Lorentz-corrected)

with ``theta`` the angle to B0 (scanner ``z`` unless told otherwise). The lesion has no
signal of its own (haemosiderin / calcium: T2* far shorter than any echo time). The
complex signal of every echo is multiplied by the intravoxel average of
``w exp(i phase_sign gamma B0 dB TE)`` (``w`` = 0 inside the sphere), computed on a
supersampled grid (spacing <= ``subvoxel_mm``) near the lesion, where the field varies
within a voxel; this gives both the phase shift and the dephasing ("blooming") that grows
with echo time, field strength and susceptibility. Farther out (phase below 0.05 rad at
the longest echo) only the phase at voxel centres is applied, down to 0.002 rad.

The real data keep their own noise, which the factor scales down where the signal drops;
``noise_sigma`` adds independent complex noise of standard deviation
``noise_sigma * sqrt(1 - |factor|^2)`` so that the noise level is restored there.

Used by ``benchmarks/real_background.py`` and ``tests/test_injection.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..algorithms.arrays import voxel_sizes
from .phantom.geometry import apply_affine
from .phantom.physics import GAMMA_RAD, sphere_field_ppm

__all__ = ["TRUTH_COLUMNS", "inject_lesions", "lesion_factor", "random_lesions"]

#: Truth columns, the phantom's (``mni_*`` are NaN, ``mars_category`` "n/a").
TRUTH_COLUMNS = [
    "lesion_id", "kind", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z",
    "radius_mm", "dchi_ppm", "apparent_diameter_mm", "min_relative_signal",
    "mars_category"]

_NEAR_RAD = 0.05  # supersample where the lesion phase exceeds this at the longest echo
_FAR_RAD = 0.002  # apply the phase at voxel centres down to this


def _box(c_vox, r_mm, vox, shape):
    return tuple(slice(max(0, int(np.floor(c_vox[d] - r_mm / vox[d]))),
                       min(shape[d], int(np.ceil(c_vox[d] + r_mm / vox[d])) + 1))
                 for d in range(3))


def _grid_idx(box):
    return np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"),
                    -1).reshape(-1, 3).astype(float)


def lesion_factor(shape, affine, centre_mm, radius_mm, dchi_ppm, echo_times_s,
                  field_strength_t, *, phase_sign=1, b0_direction=None, subvoxel_mm=0.3):
    """Complex factor of one lesion on a grid.

    Returns
    -------
    box : tuple of 3 slice
        Region of the grid the factor covers (the far-field box).
    factor : (E, ...) complex128 ndarray
        Multiplies the lesion-free signal of each echo in ``box``.
    rel_sig_last : ndarray
        ``|factor|`` at the longest echo in ``box``.
    """
    affine = np.asarray(affine, float)
    vox = voxel_sizes(affine)
    tes = np.asarray(echo_times_s, float).reshape(-1)
    b0 = (0.0, 0.0, 1.0) if b0_direction is None else b0_direction
    c_mm = np.asarray(centre_mm, float)
    c_vox = np.linalg.solve(affine[:3, :3], c_mm - affine[:3, 3])
    a, dchi = float(radius_mm), float(dchi_ppm)
    gamma_b0 = phase_sign * GAMMA_RAD * field_strength_t * 1e-6  # rad / s / ppm
    phase_scale = GAMMA_RAD * field_strength_t * 1e-6 * abs(dchi) * 2.0 / 3.0 * tes.max()
    r_near = max(a * (phase_scale / _NEAR_RAD) ** (1 / 3), a + 2 * vox.max())
    r_far = max(a * (phase_scale / _FAR_RAD) ** (1 / 3), r_near)
    box_far = _box(c_vox, r_far, vox, shape)
    box_near = _box(c_vox, r_near, vox, shape)
    far_shape = tuple(s.stop - s.start for s in box_far)
    near_shape = tuple(s.stop - s.start for s in box_near)
    # far: phase at voxel centres
    field = sphere_field_ppm(apply_affine(affine, _grid_idx(box_far)), c_mm, a, dchi, b0)
    factor = np.exp(1j * gamma_b0 * tes[:, None] * field[None, :]).reshape(
        (len(tes),) + far_shape)
    # near: supersampled intravoxel average, no signal inside the sphere
    sub_n = [max(1, int(np.ceil(v / subvoxel_mm))) for v in vox]
    offs = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in sub_n],
                                indexing="ij"), -1).reshape(-1, 3)
    near_idx = _grid_idx(box_near)
    acc = np.empty((len(tes), len(near_idx)), np.complex128)
    chunk = max(1, 400_000 // len(offs))
    for c0 in range(0, len(near_idx), chunk):
        pv = near_idx[c0:c0 + chunk, None, :] + offs[None]
        pmm = apply_affine(affine, pv.reshape(-1, 3))
        dB = sphere_field_ppm(pmm, c_mm, a, dchi, b0).reshape(pv.shape[:2])
        outside = (np.sum((pmm - c_mm) ** 2, axis=1) > a * a).reshape(pv.shape[:2])
        for e, te in enumerate(tes):
            acc[e, c0:c0 + chunk] = np.mean(outside * np.exp(1j * gamma_b0 * te * dB), axis=1)
    rel = tuple(slice(n.start - f.start, n.stop - f.start) for n, f in zip(box_near, box_far))
    factor[(slice(None),) + rel] = acc.reshape((len(tes),) + near_shape)
    return box_far, factor, np.abs(factor[int(np.argmax(tes))])


def _apparent_diameter(rel_sig, c_vox_local, voxel_volume):
    """Phantom definition: diameter of the sphere whose volume is that of the connected
    region with ``rel_sig < 0.5`` holding (or nearest to) the lesion centre; 0 if none."""
    dark = rel_sig < 0.5
    if not dark.any():
        return 0.0
    c = np.clip(np.round(c_vox_local).astype(int), 0, np.array(rel_sig.shape) - 1)
    lab, _ = ndi.label(dark)
    lab_c = lab[tuple(c)]
    if lab_c == 0:
        near = np.argwhere(dark)
        lab_c = lab[tuple(near[np.argmin(np.linalg.norm(near - c, axis=1))])]
    n_dark = int((lab == lab_c).sum())
    return float((6.0 * n_dark * voxel_volume / np.pi) ** (1 / 3))


def _to_radians(phase, phase_units):
    if phase_units == "rad":
        return phase, 1.0
    if phase_units == "arbitrary":  # scaled so that max |phase| <-> pi
        scale = float(np.abs(phase).max()) / np.pi
        return phase / scale, scale
    raise ValueError(f"phase_units must be 'rad' or 'arbitrary', got {phase_units!r}")


def _centre_mm(lesion, affine):
    if all(k in lesion for k in ("x", "y", "z")):
        return np.array([lesion["x"], lesion["y"], lesion["z"]], float)
    if all(k in lesion for k in ("i", "j", "k")):
        return apply_affine(affine, np.array([lesion["i"], lesion["j"], lesion["k"]], float))
    raise ValueError("a lesion needs its centre as x y z (mm) or i j k (voxels)")


def inject_lesions(magnitude, phase, affine, echo_times_s, field_strength_t, lesions, *,
                   phase_sign=+1, phase_units="rad", b0_direction=None, subvoxel_mm=0.3,
                   noise_sigma=0.0, rng=None):
    """Inject spherical microbleeds / calcifications into gradient-echo data.

    Parameters
    ----------
    magnitude, phase : (X, Y, Z[, E]) array_like
        Echoes along the last axis (one echo may be 3D). Never modified.
    affine : (4, 4) array_like
        Voxel to scanner mm.
    echo_times_s : sequence of float
        One per echo, s.
    field_strength_t : float
    lesions : sequence of dict
        Centre as ``x y z`` (scanner mm) or ``i j k`` (voxels), ``radius_mm``,
        ``dchi_ppm`` (negative: calcification) and optionally ``kind`` (default ``cmb``
        for dchi > 0, ``calcification`` otherwise).
    phase_sign : {+1, -1}
        +1: a positive field shift gives a positive phase.
    phase_units : {"rad", "arbitrary"}
        ``arbitrary``: scaled so that max |phase| is pi (the output keeps that scale).
    b0_direction : array of 3 float, optional
        B0 in scanner coordinates (default scanner ``z``).
    subvoxel_mm : float
        Supersampling spacing near lesions, mm.
    noise_sigma : float
        Standard deviation of the data's complex noise (magnitude units); restores the
        noise level where the lesion lowers the signal (0: no noise added).
    rng : numpy.random.Generator, optional
        For the added noise.

    Returns
    -------
    magnitude, phase : ndarray float32, same shape as the inputs
        Phase wrapped to [-pi, pi) in the input units.
    truth : pandas.DataFrame
        :data:`TRUTH_COLUMNS`; ``apparent_diameter_mm`` is the phantom's (the lesion
        lowers the noise-free magnitude below 50 % at the longest echo).
    """
    if phase_sign not in (1, -1):
        raise ValueError("phase_sign must be +1 or -1")
    affine = np.asarray(affine, float)
    mag = np.asarray(magnitude, np.float64)
    pha, scale = _to_radians(np.asarray(phase, np.float64), phase_units)
    squeeze = mag.ndim == 3
    if squeeze:
        mag, pha = mag[..., None], pha[..., None]
    tes = np.asarray(echo_times_s, float).reshape(-1)
    if mag.shape != pha.shape or mag.shape[-1] != len(tes):
        raise ValueError(f"magnitude {mag.shape}, phase {pha.shape} and {len(tes)} echo "
                         "times disagree")
    shape = mag.shape[:3]
    sig = mag * np.exp(1j * pha)  # new array: the inputs are never written
    vox = voxel_sizes(affine)
    total = np.ones(shape, np.float64)  # |factor| product at the longest echo (for noise)
    mag_factor = np.ones((len(tes),) + shape, np.float64) if noise_sigma > 0 else None
    rows = []
    for n, les in enumerate(lesions, start=1):
        c_mm = _centre_mm(les, affine)
        c_vox = np.linalg.solve(affine[:3, :3], c_mm - affine[:3, 3])
        a, dchi = float(les["radius_mm"]), float(les["dchi_ppm"])
        box, factor, rel_last = lesion_factor(
            shape, affine, c_mm, a, dchi, tes, field_strength_t, phase_sign=phase_sign,
            b0_direction=b0_direction, subvoxel_mm=subvoxel_mm)
        for e in range(len(tes)):
            sig[box + (e,)] *= factor[e]
            if mag_factor is not None:
                mag_factor[(e,) + box] *= np.abs(factor[e])
        total[box] *= rel_last
        local = c_vox - np.array([s.start for s in box])
        rows.append({
            "lesion_id": n,
            "kind": les.get("kind", "cmb" if dchi > 0 else "calcification"),
            "x": c_mm[0], "y": c_mm[1], "z": c_mm[2],
            "i": c_vox[0], "j": c_vox[1], "k": c_vox[2],
            "mni_x": np.nan, "mni_y": np.nan, "mni_z": np.nan,
            "radius_mm": a, "dchi_ppm": dchi,
            "apparent_diameter_mm": _apparent_diameter(rel_last, local, float(np.prod(vox))),
            "min_relative_signal": float(rel_last.min()),
            "mars_category": "n/a",
        })
    if mag_factor is not None:
        rng = np.random.default_rng() if rng is None else rng
        for e in range(len(tes)):
            extra = noise_sigma * np.sqrt(np.clip(1.0 - mag_factor[e] ** 2, 0.0, 1.0))
            noise = rng.standard_normal(shape + (2,))
            sig[..., e] += extra * (noise[..., 0] + 1j * noise[..., 1])
    out_mag = np.abs(sig).astype(np.float32)
    out_pha = np.angle(sig)  # (-pi, pi]
    out_pha = np.where(out_pha >= np.pi, -np.pi, out_pha) * scale
    out_pha = out_pha.astype(np.float32)
    if squeeze:
        out_mag, out_pha = out_mag[..., 0], out_pha[..., 0]
    truth = pd.DataFrame(rows, columns=TRUTH_COLUMNS)
    return out_mag, out_pha, truth


def random_lesions(brain_mask, affine, n, rng, radius_mm=(0.2, 1.2), dchi_ppm=(0.4, 3.0),
                   min_spacing_mm=8.0, avoid=None, *, edge_mm=3.0, avoid_mm=2.0,
                   n_calcifications=0, calcification_dchi_ppm=(-2.0, -0.5),
                   calcification_radius_mm=(0.5, 1.5), max_attempts=500):
    """Random lesion specifications for :func:`inject_lesions`, deterministic from ``rng``.

    Centres lie in ``brain_mask`` at least ``edge_mm`` + radius from its edge (the array
    border counts as edge), ``min_spacing_mm`` from each other and ``avoid_mm`` + radius
    from ``avoid`` (e.g. dark veins). Radius and susceptibility are uniform in their
    ranges; the last ``n_calcifications`` of the ``n`` lesions are calcifications. A
    lesion with no room after ``max_attempts`` draws is dropped.

    Returns
    -------
    list of dict
        ``kind x y z i j k radius_mm dchi_ppm`` (voxel coordinates float).
    """
    affine = np.asarray(affine, float)
    brain = np.asarray(brain_mask, bool)
    vox = voxel_sizes(affine)
    edge = ndi.distance_transform_edt(np.pad(brain, 1), sampling=vox)[1:-1, 1:-1, 1:-1]
    if avoid is not None and np.asarray(avoid, bool).any():
        away = ndi.distance_transform_edt(~np.asarray(avoid, bool), sampling=vox)
    else:
        away = np.full(brain.shape, np.inf)
    out, centres = [], []
    for m in range(n):
        calc = m >= n - n_calcifications
        r_rng, c_rng = ((calcification_radius_mm, calcification_dchi_ppm) if calc
                        else (radius_mm, dchi_ppm))
        a = float(rng.uniform(*r_rng))
        dchi = float(rng.uniform(*c_rng))
        ok = np.argwhere((edge >= edge_mm + a) & (away >= avoid_mm + a))
        if len(ok) == 0:
            continue
        for _ in range(max_attempts):
            ijk = ok[rng.integers(len(ok))] + rng.uniform(-0.5, 0.5, 3)
            xyz = apply_affine(affine, ijk)
            if all(np.linalg.norm(xyz - c) >= min_spacing_mm for c in centres):
                centres.append(xyz)
                out.append({"kind": "calcification" if calc else "cmb",
                            "x": xyz[0], "y": xyz[1], "z": xyz[2],
                            "i": ijk[0], "j": ijk[1], "k": ijk[2],
                            "radius_mm": a, "dchi_ppm": dchi})
                break
    return out
