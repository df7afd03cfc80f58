"""MR physics of the phantom: tissue properties, susceptibility, dipole fields, decay.

Field perturbations are in ppm of B0; B0 is along scanner z. The k-space dipole kernel
``D(k) = 1/3 - (k . b0)^2 / |k|^2`` takes ``b0`` expressed in the array axes, so it holds
for oblique, permuted and flipped grids.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

__all__ = [
    "AIR_DCHI_PPM",
    "GAMMA_HZ_PER_T",
    "GAMMA_RAD",
    "TISSUES",
    "air_referenced",
    "b0_in_array_axes",
    "dipole_kernel",
    "field_from_susceptibility",
    "noise_sigma",
    "proton_density_decay",
    "r2star",
    "sinc_half",
    "sphere_field_ppm",
    "susceptibility",
    "tissue_field",
    "wrap",
]

#: Proton gyromagnetic ratio / (2 pi), in Hz per tesla.
GAMMA_HZ_PER_T = 42.577478518e6
GAMMA_RAD = 2.0 * np.pi * GAMMA_HZ_PER_T  # rad / s / T

#: Tissue properties. ``rho``: relative proton density; ``t2star_3t_s``: T2* at 3 T in
#: seconds (R2* is scaled linearly with field strength); ``dchi_ppm``: volume
#: susceptibility relative to water/CSF in ppm (SI). Air is handled separately.
TISSUES: dict[str, dict[str, float]] = {
    "gm": {"rho": 0.80, "t2star_3t_s": 0.045, "dchi_ppm": 0.02},
    "wm": {"rho": 0.70, "t2star_3t_s": 0.040, "dchi_ppm": -0.03},
    "csf": {"rho": 1.00, "t2star_3t_s": 0.200, "dchi_ppm": 0.0},
    "deep_gm": {"rho": 0.78, "t2star_3t_s": 0.025, "dchi_ppm": 0.08},
    "vein": {"rho": 0.85, "t2star_3t_s": 0.010, "dchi_ppm": 0.40},
    "skull": {"rho": 0.05, "t2star_3t_s": 0.002, "dchi_ppm": -2.0},
    "scalp": {"rho": 0.90, "t2star_3t_s": 0.030, "dchi_ppm": 0.0},
}
AIR_DCHI_PPM = 9.4  # air relative to water

# float32 bounds that are strictly inside [-pi, pi) when compared in float64
_PI_F32_BELOW = float(np.nextafter(np.float32(np.pi), np.float32(0)))


def dipole_kernel(shape, voxel_size, b0_direction) -> np.ndarray:
    """k-space unit dipole kernel ``D(k) = 1/3 - (k.b0)^2 / |k|^2`` for ``rfftn``.

    Parameters
    ----------
    shape : tuple of int
        Array shape (real space).
    voxel_size : tuple of float
        Voxel size per array axis, mm.
    b0_direction : array of 3 float
        Unit vector of B0 expressed in the (orthonormal) array axes.

    Returns
    -------
    ndarray, shape ``shape[:-1] + (shape[-1] // 2 + 1,)``, float32; ``D(0) = 0``.
    """
    ks = [sfft.fftfreq(n, d=v) for n, v in zip(shape[:-1], voxel_size[:-1])]
    ks.append(sfft.rfftfreq(shape[-1], d=voxel_size[-1]))
    kx, ky, kz = np.meshgrid(*[k.astype(np.float32) for k in ks], indexing="ij", sparse=True)
    b = np.asarray(b0_direction, np.float32)
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    k2 = kx * kx + ky * ky + kz * kz
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.float32(1 / 3) - kb * kb / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32)


def field_from_susceptibility(chi_ppm, voxel_size, b0_direction, pad_mm=40.0) -> np.ndarray:
    """Field perturbation (ppm of B0) of a susceptibility map (ppm) by k-space dipole
    convolution, with zero padding of ``pad_mm`` on every side (outside = 0)."""
    chi_ppm = np.asarray(chi_ppm, np.float32)
    pads = [int(np.ceil(pad_mm / v)) for v in voxel_size]
    shape = tuple(sfft.next_fast_len(n + 2 * p, real=True)
                  for n, p in zip(chi_ppm.shape, pads))
    spec = sfft.rfftn(chi_ppm, s=shape, workers=1)
    spec *= dipole_kernel(shape, voxel_size, b0_direction)
    out = sfft.irfftn(spec, s=shape, workers=1)
    del spec
    sl = tuple(slice(0, n) for n in chi_ppm.shape)
    return np.ascontiguousarray(out[sl], dtype=np.float32)


def sphere_field_ppm(points_mm, centre_mm, radius_mm, dchi_ppm,
                     b0_direction=None) -> np.ndarray:
    """Field (ppm of B0) of a uniformly magnetised sphere, B0 along scanner z (or along
    ``b0_direction``, a vector in the same coordinates as the points).

    ``dB/B0 = dchi/3 (a/r)^3 (3 cos^2(theta) - 1)`` outside, 0 inside (Lorentz-corrected).
    """
    d = np.asarray(points_mm, float) - np.asarray(centre_mm, float)
    r2 = np.einsum("...i,...i->...", d, d)
    r2 = np.maximum(r2, 1e-12)
    if b0_direction is None:
        cos2 = d[..., 2] ** 2 / r2
    else:
        b = np.asarray(b0_direction, float)
        cos2 = (d @ (b / np.linalg.norm(b))) ** 2 / r2
    a3 = radius_mm ** 3
    out = dchi_ppm / 3.0 * a3 / r2 ** 1.5 * (3.0 * cos2 - 1.0)
    return np.where(r2 > radius_mm ** 2, out, 0.0)


def b0_in_array_axes(affine, voxel_size):
    """Scanner z (B0) expressed along the array axes of a grid with the given nominal
    ``voxel_size``: row 2 of the rotation part of ``affine``.

    Unlike :func:`cmbprep.algorithms.arrays.b0_direction` (which divides by the column
    norms and renormalises) this divides by the configured voxel sizes; the two differ in
    the last float64 bits, and the simulated field is kept bit for bit.
    """
    return affine[:3, :3].T @ np.array([0.0, 0.0, 1.0]) / np.array(voxel_size)


def tissue_field(chi_ppm, affine, voxel_size, brain_mask):
    """Field (ppm) of the susceptibility map on a grid, median in the brain removed."""
    field = field_from_susceptibility(chi_ppm, voxel_size, b0_in_array_axes(affine, voxel_size))
    if brain_mask.any():
        field -= np.float32(np.median(field[brain_mask]))
    return field


def r2star(tissue, b0):
    """R2* (1/s) of a :data:`TISSUES` entry at field strength ``b0`` (T)."""
    return 1.0 / TISSUES[tissue]["t2star_3t_s"] * (b0 / 3.0)


def susceptibility(fractions, venous_dchi_ppm):
    """Voxel susceptibility (ppm, float32) from compartment fractions."""
    chi = np.zeros(next(iter(fractions.values())).shape, np.float32)
    for n, f in fractions.items():
        dchi = venous_dchi_ppm if n == "vein" else TISSUES[n]["dchi_ppm"]
        chi += f * np.float32(dchi)
    return chi


def air_referenced(chi, tissue_total, include_head):
    """Susceptibility relative to air for the FFT (``chi`` modified in place) and the
    susceptibility relative to water reported to the user (air = 9.4 ppm)."""
    if include_head:
        # the FFT reference is air (0 outside) so that zero padding is consistent
        chi_out = chi + np.float32(AIR_DCHI_PPM) * np.clip(1.0 - tissue_total, 0.0, 1.0)
        chi -= np.float32(AIR_DCHI_PPM) * np.minimum(tissue_total, 1.0)
    else:
        chi_out = chi.copy()
    return chi, chi_out


def proton_density_decay(fractions, echo_times_s, field_strength_t):
    """Decay-weighted proton density ``sum_c f_c rho_c exp(-TE R2*_c)``, (E, X, Y, Z)."""
    shape = next(iter(fractions.values())).shape
    s_mag = np.zeros((len(echo_times_s),) + shape, np.float32)
    for e, te in enumerate(echo_times_s):
        for n, f in fractions.items():
            s_mag[e] += f * np.float32(TISSUES[n]["rho"]
                                       * np.exp(-te * r2star(n, field_strength_t)))
    return s_mag


def noise_sigma(wm_fraction, s_mag, noise_level):
    """Noise standard deviation: ``noise_level`` times the mean white-matter signal at
    the first echo (the maximum signal when there is no white matter)."""
    wm_sel = wm_fraction > 0.9
    noise_ref = float(s_mag[0][wm_sel].mean()) if wm_sel.any() else float(s_mag[0].max())
    return noise_level * noise_ref


def sinc_half(dphi):
    """Mean of exp(i phi) over a uniform phase spread ``dphi``: sin(dphi/2)/(dphi/2)."""
    x = np.abs(np.asarray(dphi, np.float32)) * np.float32(0.5)
    out = np.ones_like(x)
    nz = x > 1e-4
    out[nz] = np.sin(x[nz]) / x[nz]
    return out


def wrap(phase):
    """Phase wrapped to [-pi, pi), float32 values strictly inside the interval."""
    out = np.mod(np.asarray(phase, np.float64) + np.pi, 2 * np.pi) - np.pi
    return np.clip(out, -_PI_F32_BELOW, _PI_F32_BELOW).astype(np.float32)
