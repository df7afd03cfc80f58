"""Phase in radians: rescaling stored phase, wrapping, Laplacian unwrapping and the
multi-echo frequency fit."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .layout import zero_nonfinite

__all__ = ["fit_frequency", "phase_to_radians", "unwrap_echoes", "unwrap_phase_laplacian",
           "wrap_phase"]


def phase_to_radians(phase, units=None):
    """Rescale stored phase to radians in [-pi, pi).

    Rule: with ``units == "rad"`` values are kept (wrapped to [-pi, pi) if stored as
    [0, 2 pi)). Otherwise (``"arbitrary"`` or unknown) the range decides: values within
    [-pi, pi] (1 % slack) are taken as radians; symmetric ranges (minimum < 0) are
    scaled by ``pi / max(|values|)``; non-negative ranges ``[0, M]`` (e.g. 0..4095) are
    mapped to ``2 pi v / (M + s) - pi`` where ``s`` is 1 for integer-valued data (the
    unsigned 12-bit convention 0..4095 <-> [-pi, pi)) and 0 otherwise. A constant phase
    offset is harmless (high-pass filtering removes it); the scale is what matters.

    Parameters
    ----------
    phase : array_like
        Stored phase, any shape.
    units : {"rad", "arbitrary", None}, optional
        The sidecar ``Units``.

    Returns
    -------
    phase_rad : numpy.ndarray of float32
    scaling : str
        Description of the rescaling applied (for sidecars).
    """
    phase = zero_nonfinite(np.asarray(phase, dtype=np.float32))
    lo, hi = float(phase.min()), float(phase.max())
    slack = 1.01 * np.pi
    if units == "rad" or (lo >= -slack and hi <= slack and hi - lo > np.pi):
        if hi > slack:  # [0, 2 pi) storage
            return wrap_phase(phase), "radians, wrapped from [0, 2pi)"
        return np.clip(phase, -np.pi, np.pi).astype(np.float32), "radians, kept"
    if lo < 0:
        scale = np.pi / max(abs(lo), abs(hi))
        return (phase * np.float32(scale)).astype(np.float32), f"x pi/{np.pi / scale:.6g}"
    step = 1.0 if np.allclose(phase[:: max(1, phase.size // 100000)],
                              np.round(phase[:: max(1, phase.size // 100000)])) else 0.0
    scale = 2 * np.pi / (hi + step)
    return (phase * np.float32(scale) - np.float32(np.pi)).astype(np.float32), \
        f"x 2pi/{hi + step:.6g} - pi"


def wrap_phase(phase):
    """Wrap phase to [-pi, pi)."""
    phase = np.asarray(phase)
    return ((phase + np.pi) % (2 * np.pi) - np.pi).astype(phase.dtype, copy=False)


def _neumann_laplacian(f, voxel_size):
    """7-point Laplacian (1/mm^2) with edge replication (Neumann) boundaries."""
    out = np.zeros_like(f)
    term = np.empty_like(f)
    for axis, h in enumerate(voxel_size):
        n = f.shape[axis]

        def sl(start, stop, axis=axis):
            return (slice(None),) * axis + (slice(start, stop),)

        # f[i - 1] + f[i + 1] with the edge value repeated beyond each end
        if n > 1:
            np.add(f[sl(0, n - 2)], f[sl(2, n)], out=term[sl(1, n - 1)])
            np.add(f[sl(0, 1)], f[sl(1, 2)], out=term[sl(0, 1)])
            np.add(f[sl(n - 2, n - 1)], f[sl(n - 1, n)], out=term[sl(n - 1, n)])
        else:
            np.add(f, f, out=term)
        term -= 2 * f
        term /= np.float32(h * h)
        out += term
    return out


def _laplacian_eigenvalues(shape, voxel_size, dtype=np.float32):
    """Eigenvalues of the Neumann 7-point Laplacian in the DCT-II basis (broadcastable)."""
    eig = np.zeros(shape, dtype=dtype)
    for axis, (n, h) in enumerate(zip(shape, voxel_size)):
        k = np.arange(n, dtype=np.float64)
        lam = (2 * np.cos(np.pi * k / n) - 2) / (h * h)
        eig += lam.astype(dtype).reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return eig


def unwrap_phase_laplacian(phase, voxel_size, *, n_threads=1):
    """Laplacian phase unwrapping (Schofield & Zhu 2003) made congruent to the input.

    The Laplacian of the true phase is obtained from the wrapped phase as
    ``cos(p) lap(sin p) - sin(p) lap(cos p)`` and inverted with a DCT (Neumann
    boundaries, physical voxel sizes). The smooth estimate is then made *congruent*:
    ``unwrapped = phase + 2 pi round((estimate - phase) / 2 pi)``, so the result differs
    from the input only by multiples of 2 pi. The global 2 pi offset is arbitrary.

    Parameters
    ----------
    phase : (X, Y, Z) array_like
        Wrapped phase in radians.
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    n_threads : int, optional
        Workers for the FFTs (default 1).

    Returns
    -------
    numpy.ndarray of float32
        Unwrapped phase.
    """
    phase = np.asarray(phase, dtype=np.float32)
    s, c = np.sin(phase), np.cos(phase)
    lap = c * _neumann_laplacian(s, voxel_size)
    lap -= s * _neumann_laplacian(c, voxel_size)
    del s, c
    coeffs = sfft.dctn(lap, type=2, norm="ortho", workers=n_threads)
    del lap
    eig = _laplacian_eigenvalues(phase.shape, voxel_size)
    eig.flat[0] = 1.0
    coeffs /= eig
    coeffs.flat[0] = 0.0
    del eig
    estimate = sfft.idctn(coeffs, type=2, norm="ortho", workers=n_threads)
    del coeffs
    estimate -= phase
    estimate *= np.float32(1 / (2 * np.pi))
    np.round(estimate, out=estimate)
    estimate *= np.float32(2 * np.pi)
    estimate += phase
    return estimate.astype(np.float32, copy=False)


def unwrap_echoes(phase, magnitude, voxel_size, *, mask=None, n_threads=1):
    """Unwrap each echo spatially, then align the echoes' global 2 pi offsets.

    Echo ``e`` is shifted by the multiple of 2 pi that best matches echo ``e - 1`` plus
    the wrapped phase difference between the two echoes (median over ``mask``), so all
    echoes share one temporal unwrapping.

    Parameters
    ----------
    phase, magnitude : (X, Y, Z, E) array_like
        Wrapped phase (rad) and magnitude of each echo.
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    mask : (X, Y, Z) array_like of bool, optional
        Voxels used to align the echoes (default: all).
    n_threads : int, optional

    Returns
    -------
    numpy.ndarray of float32, (X, Y, Z, E)
    """
    phase = np.asarray(phase, dtype=np.float32)
    if mask is None:
        mask = np.ones(phase.shape[:3], dtype=bool)
    out = np.empty_like(phase)
    for e in range(phase.shape[3]):
        out[..., e] = unwrap_phase_laplacian(phase[..., e], voxel_size, n_threads=n_threads)
        if e:
            step = wrap_phase(phase[..., e] - phase[..., e - 1])
            predicted = out[..., e - 1] + step
            k = np.round(np.median((predicted - out[..., e])[mask]) / (2 * np.pi))
            out[..., e] += np.float32(2 * np.pi * k)
    return out


def fit_frequency(unwrapped_phase, magnitude, echo_times):
    """Weighted least-squares fit of ``phase = phi0 + omega * TE`` per voxel.

    Weights are the squared echo magnitudes (inverse phase-noise variance). The intercept
    ``phi0`` absorbs the receive-phase offset; ``omega`` is returned.

    Parameters
    ----------
    unwrapped_phase, magnitude : (X, Y, Z, E) array_like
    echo_times : sequence of E floats
        Seconds.

    Returns
    -------
    numpy.ndarray of float32, (X, Y, Z)
        Angular frequency offset in rad/s.
    """
    te = np.asarray(echo_times, dtype=np.float64)
    te_centre = float(te.mean())  # centring keeps the float32 sums well conditioned
    tc = (te - te_centre).astype(np.float32)
    magnitude = np.asarray(magnitude)
    shape = magnitude.shape[:3]
    sw, swt, swp, swtt, swtp = (np.zeros(shape, np.float32) for _ in range(5))
    for e in range(len(te)):  # accumulate echo by echo: no (X, Y, Z, E) temporaries
        w = magnitude[..., e].astype(np.float32) ** 2 + np.float32(1e-30)
        p = np.asarray(unwrapped_phase[..., e], dtype=np.float32)
        sw += w
        swt += w * tc[e]
        swtt += w * (tc[e] * tc[e])
        wp = w * p
        swp += wp
        swtp += wp * tc[e]
        del w, p, wp
    den = sw * swtt - swt * swt
    num = sw * swtp - swt * swp
    return (num / np.maximum(den, np.float32(1e-30))).astype(np.float32)
