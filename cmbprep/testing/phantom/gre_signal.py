"""Gradient-echo signal: magnitude and phase per echo on the output field of view.

Combines the decay-weighted proton density, the tissue, background and lesion fields,
intra-voxel and venous dephasing, a smooth receive phase offset and bias, and complex
Gaussian noise. Assembled in chunks along array axis 0 to bound memory.
"""

from __future__ import annotations

import numpy as np

from .geometry import shifted_affine
from .physics import GAMMA_RAD, sinc_half, wrap
from .smooth_field import SmoothField

__all__ = ["acquire"]


def _receive_chain(acq_seed, brain_centre_mm):
    """Smooth background field, phase offset and bias functions, the constant phase
    offset and the noise generator of an acquisition seed (streams ``[seed, 2..6]``)."""
    bg_fn = SmoothField(np.random.default_rng([int(acq_seed), 2]), brain_centre_mm)
    ph0_fn = SmoothField(np.random.default_rng([int(acq_seed), 3]), brain_centre_mm)
    bias_fn = SmoothField(np.random.default_rng([int(acq_seed), 4]), brain_centre_mm)
    ph0_const = float(np.random.default_rng([int(acq_seed), 5]).uniform(-np.pi, np.pi))
    rng_noise = np.random.default_rng([int(acq_seed), 6])
    return bg_fn, ph0_fn, bias_fn, ph0_const, rng_noise


def _lesion_overlaps(lesions, inner, inner_shape):
    """Lesion field at voxel centres within chunk ``inner`` and, per overlapping
    lesion, (chunk slices, complex factor, factor slices)."""
    centre = np.zeros(inner_shape, np.float32)
    overlaps = []
    for les in lesions:
        box, fac, cfield = les.box, les.factor, les.centre_field
        ov = tuple(slice(max(b.start, q.start), min(b.stop, q.stop)) for b, q in zip(box, inner))
        if all(o.start < o.stop for o in ov):
            dst = tuple(slice(o.start - q.start, o.stop - q.start) for o, q in zip(ov, inner))
            src = tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(ov, box))
            centre[dst] += cfield[src]
            overlaps.append((dst, fac, src))
    return centre, overlaps


def _echo_signal(e, te, tf, grads, s_mag_e, vein_sin2, bias, ph0, overlaps, cfg, dw_vein,
                 gamma_b0):
    """Noise-free complex signal of one echo in one chunk (complex64)."""
    # extravascular static dephasing by sub-voxel veins (Yablonskiy & Haacke 1994):
    # exp(-TE zeta dw), dw = gamma B0 dchi sin^2(theta) / 2; then the intra-voxel
    # dephasing of the tissue field (linear phase ramp across the voxel)
    dephase = np.exp(-np.float32(te) * dw_vein * vein_sin2)
    for g in grads:
        dephase *= sinc_half(np.float32(gamma_b0 * te) * g)
    phase = np.float32(cfg.phase_sign * gamma_b0 * te) * tf + ph0
    sig = (s_mag_e * dephase * bias * np.float32(1000.0)).astype(np.complex64)
    sig *= np.exp(1j * phase).astype(np.complex64)
    for dst, fac, src in overlaps:
        sig[dst] *= fac[(e,) + src]
    return sig


def acquire(cfg, field, s_mag, vein_frac_sin2, lesions, grid, tes, acq_seed, sigma):
    """Magnitude, wrapped phase (output FOV, (X, Y, Z, E) float32) and the noise-free
    field at voxel centres (ppm, float32).

    Parameters
    ----------
    cfg : PhantomConfig
    field : ndarray float32
        Tissue field plus lesion far fields on the simulation grid, ppm.
    s_mag : (E, X, Y, Z) ndarray float32
        Decay-weighted proton density.
    vein_frac_sin2 : ndarray float32
        Venous fraction weighted by ``sin^2`` of the vessel angle to B0.
    lesions : list of LesionSignal
    grid : AcquisitionGrid
    tes : ndarray
        Echo times, s.
    acq_seed : int
    sigma : float
        Noise standard deviation (fraction of a unit proton density signal).
    """
    bg_fn, ph0_fn, bias_fn, ph0_const, rng_noise = _receive_chain(acq_seed,
                                                                  grid.brain_centre_mm)
    affine, shape, crop = grid.affine, grid.shape, grid.crop
    n_echo = len(tes)
    crop_shape = tuple(s.stop - s.start for s in crop)
    mag = np.empty(crop_shape + (n_echo,), np.float32)
    pha = np.empty(crop_shape + (n_echo,), np.float32)
    field_out = np.empty(crop_shape, np.float32)
    gamma_b0 = GAMMA_RAD * float(cfg.field_strength_t) * 1e-6  # rad / s / ppm
    dw_vein = np.float32(gamma_b0 * abs(cfg.venous_dchi_ppm) / 2.0)
    out_step = max(1, int(1_000_000 // max(1, crop_shape[1] * crop_shape[2])))
    for a0 in range(crop[0].start, crop[0].stop, out_step):
        inner = (slice(a0, min(crop[0].stop, a0 + out_step)), crop[1], crop[2])
        halo = tuple(slice(max(0, q.start - 1), min(n, q.stop + 1)) for q, n in zip(inner, shape))
        in_h = tuple(slice(q.start - h.start, q.stop - h.start) for q, h in zip(inner, halo))
        out_sl = tuple(slice(q.start - c.start, q.stop - c.start) for q, c in zip(inner, crop))
        inner_shape = tuple(q.stop - q.start for q in inner)
        tf = field[halo] + np.float32(cfg.background_field_ppm) * bg_fn.on_grid(
            shifted_affine(affine, [h.start for h in halo]), tuple(h.stop - h.start for h in halo))
        grads = [g[in_h] for g in np.gradient(tf)]  # ppm per voxel along each array axis
        tf = tf[in_h]
        aff_in = shifted_affine(affine, [q.start for q in inner])
        ph0 = (np.float32(ph0_const) + np.float32(np.pi) * ph0_fn.on_grid(aff_in, inner_shape)
               if cfg.phase_offset else np.zeros(inner_shape, np.float32))
        bias = np.exp(np.float32(np.log1p(cfg.bias_strength)) * bias_fn.on_grid(aff_in,
                                                                               inner_shape))
        centre, overlaps = _lesion_overlaps(lesions, inner, inner_shape)
        field_out[out_sl] = tf + centre
        for e, te in enumerate(tes):
            sig = _echo_signal(e, te, tf, grads, s_mag[e][inner], vein_frac_sin2[inner], bias,
                               ph0, overlaps, cfg, dw_vein, gamma_b0)
            if sigma > 0:
                noise = rng_noise.standard_normal(inner_shape + (2,), dtype=np.float32)
                sig += np.float32(1000.0 * sigma) * (noise[..., 0] + 1j * noise[..., 1])
            mag[out_sl + (e,)] = np.abs(sig)
            pha[out_sl + (e,)] = wrap(np.angle(sig))
        del grads, tf, ph0, bias
    return mag, pha, field_out
