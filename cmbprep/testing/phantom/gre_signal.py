"""Gradient-echo signal: magnitude and phase per echo on the output field of view.

Combines the decay-weighted proton density, the tissue, background and lesion fields,
intra-voxel and venous dephasing, a smooth receive phase offset and bias, and complex
Gaussian noise. Assembled in chunks along array axis 0 to bound memory. Optional
acquisition artefacts (``motion_blur_mm``, ``gibbs_ringing``) act on the whole complex
image of each echo before the noise is added.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from cmbprep.algorithms.arrays import b0_direction

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


def _motion_positions(affine, max_mm, rng, n_pos=4):
    """Dwell fractions and voxel shifts of ``n_pos`` head positions: the reference
    position and rigid translations up to ``max_mm`` (mm) in random directions."""
    weights = rng.dirichlet(np.ones(n_pos))
    to_vox = np.linalg.inv(np.asarray(affine, float)[:3, :3])
    shifts = [np.zeros(3)]
    for _ in range(n_pos - 1):
        direction = rng.normal(size=3)
        shifts.append(to_vox @ (direction / np.linalg.norm(direction)
                                * rng.uniform(0.0, max_mm)))
    return weights, shifts


def _motion_blur(sig, weights, shifts):
    """Weighted average of copies of the complex image ``sig`` shifted by ``shifts``
    (voxels, linear interpolation)."""
    out = np.complex64(weights[0]) * sig
    for w, shift in zip(weights[1:], shifts[1:]):
        for part, unit in ((sig.real, 1.0), (sig.imag, 1j)):
            out += np.complex64(w * unit) * ndi.shift(part, shift, order=1, mode="nearest")
    return out


def _gibbs_window(shape, slice_axis, rng):
    """Sharp k-space window keeping the central ``frac`` of k-space along the two
    in-plane axes (``frac`` uniform in [1/1.5, 1/1.25], stream ``[seed, 7]``)."""
    frac = rng.uniform(1.0 / 1.5, 1.0 / 1.25)
    window = np.ones(shape, np.float32)
    for a, n in enumerate(shape):
        if a == slice_axis:
            continue
        keep = (np.abs(np.fft.fftfreq(n)) <= 0.5 * frac).astype(np.float32)
        window *= keep.reshape([-1 if b == a else 1 for b in range(len(shape))])
    return window


def _apply_artefacts(clean, cfg, affine, acq_seed):
    """Motion blur then k-space truncation of each echo of ``clean`` (E, X, Y, Z), in
    place. The slice axis is the array axis nearest B0 (the oblique tilt is small)."""
    slice_axis = int(np.argmax(np.abs(b0_direction(affine))))
    if cfg.motion_blur_mm > 0:
        weights, shifts = _motion_positions(affine, float(cfg.motion_blur_mm),
                                            np.random.default_rng([int(acq_seed), 8]))
        for e in range(clean.shape[0]):  # the same motion for every echo
            clean[e] = _motion_blur(clean[e], weights, shifts)
    if cfg.gibbs_ringing:
        window = _gibbs_window(clean.shape[1:], slice_axis,
                               np.random.default_rng([int(acq_seed), 7]))
        axes = [a for a in range(3) if a != slice_axis]
        for e in range(clean.shape[0]):
            k = scipy.fft.fftn(clean[e], axes=axes)
            k *= window
            clean[e] = scipy.fft.ifftn(k, axes=axes)


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
    artefacts = bool(cfg.gibbs_ringing) or cfg.motion_blur_mm > 0
    # with artefacts: the noise-free complex signal of the output FOV, (E, X, Y, Z)
    clean = np.empty((n_echo,) + crop_shape, np.complex64) if artefacts else None
    chunks = []

    def add_noise_and_store(sig, out_sl, inner_shape, e):
        if sigma > 0:
            noise = rng_noise.standard_normal(inner_shape + (2,), dtype=np.float32)
            sig += np.float32(1000.0 * sigma) * (noise[..., 0] + 1j * noise[..., 1])
        mag[out_sl + (e,)] = np.abs(sig)
        pha[out_sl + (e,)] = wrap(np.angle(sig))

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
        chunks.append((out_sl, inner_shape))
        for e, te in enumerate(tes):
            sig = _echo_signal(e, te, tf, grads, s_mag[e][inner], vein_frac_sin2[inner], bias,
                               ph0, overlaps, cfg, dw_vein, gamma_b0)
            if artefacts:
                clean[(e,) + out_sl] = sig
            else:
                add_noise_and_store(sig, out_sl, inner_shape, e)
        del grads, tf, ph0, bias
    if artefacts:
        _apply_artefacts(clean, cfg, affine, acq_seed)
        for out_sl, inner_shape in chunks:  # same noise draws (order) as without artefacts
            for e in range(n_echo):
                add_noise_and_store(clean[(e,) + out_sl].copy(), out_sl, inner_shape, e)
    return mag, pha, field_out
