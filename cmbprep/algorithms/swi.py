"""Susceptibility-weighted imaging (SWI) from GRE magnitude and phase.

All functions are pure (numpy/scipy); arrays are in stored voxel order and the voxel
size or affine comes from the image header. See ``docs/swi.rst`` for the methods.

Phase sign convention (``handedness``)
--------------------------------------
``"right"``: phase = -gamma * dB * TE, so a paramagnetic source (vein, microbleed) gives a
negative phase along B0 (Haacke et al. 2004, the Siemens convention). ``"left"``: phase
= +gamma * dB * TE. Internally the phase is flipped to the ``"right"`` convention and the
negative phase mask is applied: ``mask = 1`` for phase >= 0 and ``(pi + phase) / pi`` for
``-pi < phase < 0``; ``SWI = magnitude * mask ** power``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from ..errors import DataError

__all__ = [
    "GYROMAGNETIC_RATIO",
    "load_echoes",
    "check_swi_inputs",
    "phase_to_radians",
    "looks_like_phase",
    "wrap_phase",
    "unwrap_phase_laplacian",
    "unwrap_echoes",
    "combine_magnitude",
    "fit_frequency",
    "gaussian_lowpass",
    "homodyne_highpass",
    "detect_handedness",
    "phase_mask",
    "compute_swi",
    "process_swi",
]

#: proton gyromagnetic ratio, rad / s / T
GYROMAGNETIC_RATIO = 2 * np.pi * 42.577478e6

_VALID_KINDS = ("gre", "megre", "swi", "magnitude")


# --------------------------------------------------------------------------- inputs
def load_echoes(paths):
    """Load one NIfTI per echo (or a single 4D file) as an (X, Y, Z, E) float32 array.

    Parameters
    ----------
    paths : str, Path or list of them
        One 3D file per echo, or a single 3D/4D file.

    Returns
    -------
    data : numpy.ndarray, float32, shape (X, Y, Z, E)
    affine : numpy.ndarray, (4, 4)
    header : nibabel header of the first file

    Raises
    ------
    DataError
        A file cannot be read, is not 3D/4D, or files disagree in shape/affine.
    """
    import nibabel as nib

    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no image files given")
    arrays, affine, header = [], None, None
    for path in paths:
        try:
            img = nib.load(path)
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:  # nibabel raises many types
            raise DataError(f"{path}: cannot be read as NIfTI ({exc})") from exc
        if data.ndim == 5 and data.shape[3] == 1:
            data = data[:, :, :, 0, :]
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4:
            raise DataError(f"{path}: expected a 3D or 4D image, got shape {data.shape}")
        if affine is None:
            affine, header = img.affine, img.header
        else:
            if data.shape[:3] != arrays[0].shape[:3]:
                raise DataError(f"{path}: shape {data.shape[:3]} differs from "
                                f"{paths[0]} {arrays[0].shape[:3]}")
            if not np.allclose(img.affine, affine, atol=1e-3):
                raise DataError(f"{path}: affine differs from {paths[0]}")
        arrays.append(data)
    # echo-major memory (each echo contiguous), indexed as (X, Y, Z, E)
    data = np.moveaxis(np.concatenate([a.transpose(3, 0, 1, 2) for a in arrays], axis=0),
                       0, 3)
    return data, np.asarray(affine, dtype=float), header


def looks_like_phase(values, units=None):
    """Whether ``values`` are plausibly (wrapped) phase.

    Rule: a wrapped phase image fills its value range (noise and wraps reach both ends),
    while a magnitude image has a long bright tail set by a few voxels. With all echoes
    pooled and the values mapped to [0, 1] by their range, phase must have at least
    0.2 % of the finite voxels in the top tenth of the range and in the bottom tenth.
    With ``units == "rad"`` the values must also lie within [-pi, 2 pi] (+1 %) and span
    at least pi / 2 (a mislabelled scaled phase such as +-0.0037 is refused).

    Parameters
    ----------
    values : array_like
        Phase values (any shape, all echoes).
    units : {"rad", "arbitrary", None}, optional
        The sidecar ``Units``.

    Returns
    -------
    ok : bool
    reason : str
        Empty when ``ok``; otherwise what is wrong.
    """
    values = np.asarray(values)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return False, "no finite values"
    lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        return False, "constant values"
    if units == "rad" and (lo < -np.pi * 1.01 or hi > 2 * np.pi * 1.01):
        return False, f"Units is 'rad' but values span [{lo:.4g}, {hi:.4g}]"
    if units == "rad" and hi - lo < np.pi / 2:
        return False, (f"Units is 'rad' but values span only [{lo:.4g}, {hi:.4g}] "
                       "(wrapped phase covers [-pi, pi]; set Units to 'arbitrary')")
    if finite.size > 2_000_000:  # a strided sample is plenty for the histogram
        finite = finite[:: finite.size // 1_000_000]
    scaled = (finite - lo) / (hi - lo)
    top, bottom = float(np.mean(scaled >= 0.9)), float(np.mean(scaled <= 0.1))
    if top < 0.002 or bottom < 0.002:
        return False, (f"values [{lo:.4g}, {hi:.4g}] do not fill their range like wrapped "
                       f"phase ({100 * bottom:.2f}% in the bottom tenth, {100 * top:.2f}% in "
                       "the top tenth; magnitude-like)")
    return True, ""


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
    phase = _finite(np.asarray(phase, dtype=np.float32))
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


def check_swi_inputs(magnitude, phase=(), *, input_kind, echo_times=None, phase_units=None):
    """Validate SWI inputs before processing; raise :class:`DataError` on bad data.

    Parameters
    ----------
    magnitude : list of paths
        One file per echo (or one 4D file).
    phase : list of paths, optional
        One file per echo (or one 4D file); empty when there is no phase.
    input_kind : {"gre", "megre", "swi", "magnitude"}
    echo_times : list of float, optional
        Echo times in seconds, one per echo.
    phase_units : {"rad", "arbitrary", None}, optional

    Returns
    -------
    list of str
        Warnings for the documented fallbacks (e.g. a missing single-echo EchoTime).

    Raises
    ------
    DataError
        Unreadable files, shape/affine mismatch, wrong number of echoes, all-zero or
        non-finite images, phase that is not phase, missing or implausible echo times.
    """
    if input_kind not in _VALID_KINDS:
        raise DataError(f"input_kind must be one of {_VALID_KINDS}, got {input_kind!r}")
    msgs = []
    if isinstance(magnitude, (str, Path)):
        magnitude = [magnitude]
    if isinstance(phase, (str, Path)):
        phase = [phase]
    magnitude, phase = [str(p) for p in magnitude], [str(p) for p in (phase or [])]
    mag, mag_affine, _ = load_echoes(magnitude)
    first = magnitude[0]
    n_echoes = mag.shape[3]
    for e in range(n_echoes):
        name = magnitude[min(e, len(magnitude) - 1)]
        echo = mag[..., e]
        finite = np.isfinite(echo)
        if not finite.any():
            raise DataError(f"{name}: image is all NaN/inf")
        if not np.any(echo[finite] != 0):
            raise DataError(f"{name}: image is all zero")
        if not finite.all():
            msgs.append(f"{name}: {int((~finite).sum())} non-finite voxels set to 0")
        vmax = float(np.abs(echo[finite]).max())
        if float(echo[finite].min()) < -0.01 * vmax:
            raise DataError(f"{name}: magnitude has negative values "
                            f"(min {float(echo[finite].min()):.4g}); is it a phase image?")
    if input_kind == "gre" and n_echoes != 1:
        raise DataError(f"{first}: input_kind 'gre' expects one echo, found {n_echoes}")
    if input_kind == "megre" and n_echoes < 2:
        raise DataError(f"{first}: input_kind 'megre' expects several echoes, found "
                        f"{n_echoes}")
    if input_kind in ("swi", "magnitude") and n_echoes != 1:
        raise DataError(f"{first}: input_kind {input_kind!r} expects one 3D image, found "
                        f"{n_echoes} volumes")
    if input_kind == "gre" and not phase:
        raise DataError(f"{first}: input_kind 'gre' needs a phase image, none given")
    if phase and input_kind in ("swi", "magnitude"):
        msgs.append(f"{first}: phase ignored for input_kind {input_kind!r}")
        phase = []
    if phase:
        ph, ph_affine, _ = load_echoes(phase)
        if ph.shape != mag.shape:
            raise DataError(f"{phase[0]}: phase shape {ph.shape[:3]} x {ph.shape[3]} echoes "
                            f"differs from magnitude {first} {mag.shape[:3]} x {n_echoes}")
        if not np.allclose(ph_affine, mag_affine, atol=1e-3):
            raise DataError(f"{phase[0]}: phase affine differs from magnitude {first}")
        finite = np.isfinite(ph)
        if not finite.any():
            raise DataError(f"{phase[0]}: phase image is all NaN/inf")
        if not np.any(ph[finite] != 0):
            raise DataError(f"{phase[0]}: phase image is all zero")
        ok, reason = looks_like_phase(ph, phase_units)
        if not ok:
            raise DataError(f"{phase[0]}: does not look like phase: {reason}")
    if echo_times is not None:
        echo_times = [float(t) if t is not None else None for t in echo_times]
    need_te = bool(phase) and n_echoes > 1
    te_missing = echo_times is None or any(t is None for t in echo_times)
    if need_te and (te_missing or len(echo_times) != n_echoes):
        raise DataError(f"{first}: EchoTime missing or not one per echo ({echo_times}); "
                        f"needed to combine {n_echoes} phase echoes")
    if not te_missing and echo_times:
        if any(not (0 < t < 0.5) for t in echo_times):
            raise DataError(f"{first}: EchoTime {echo_times} not in seconds (0 < TE < 0.5)")
        if len(set(echo_times)) != len(echo_times):
            raise DataError(f"{first}: repeated EchoTime values {echo_times}")
    elif input_kind == "gre":
        msgs.append(f"{first}: EchoTime missing; single-echo SWI does not need it "
                    "(recorded as n/a)")
    return msgs


# ------------------------------------------------------------------------- phase ops
def _empty_echo_major(shape, dtype=np.float32):
    """Uninitialised (X, Y, Z, E) array whose echoes are each contiguous in memory."""
    return np.moveaxis(np.empty((shape[3],) + tuple(shape[:3]), dtype), 0, 3)


def _is_echo_major(array):
    return array.ndim == 4 and np.moveaxis(array, 3, 0).flags.c_contiguous


def _echo_major(array):
    """(X, Y, Z, E) array with each echo contiguous (per-echo work without strides);
    ``array`` itself when it already is."""
    if array.ndim != 4 or np.moveaxis(array, 3, 0).flags.c_contiguous:
        return array
    out = _empty_echo_major(array.shape, array.dtype)
    out[...] = array
    return out


def _finite(array):
    """``array`` with NaN/inf set to 0 (the array itself when all values are finite)."""
    if np.isfinite(array).all():
        return array
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


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


def combine_magnitude(magnitude, method="rss"):
    """Combine echo magnitudes.

    Parameters
    ----------
    magnitude : (X, Y, Z, E) array_like
    method : {"rss", "mean"}, optional
        Root sum of squares (default; SNR-optimal weighting by the signal itself) or mean.

    Returns
    -------
    numpy.ndarray of float32, (X, Y, Z)
    """
    magnitude = np.asarray(magnitude, dtype=np.float32)
    if method == "rss":
        return np.sqrt(np.sum(magnitude ** 2, axis=3, dtype=np.float32))
    if method == "mean":
        return magnitude.mean(axis=3, dtype=np.float32)
    raise ValueError(f"unknown magnitude combination {method!r}")


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


def gaussian_lowpass(image, voxel_size, fwhm_mm, *, n_threads=1, coarse=True,
                     window=None):
    """Gaussian low-pass filter (FWHM in mm) by FFT with mirrored padding.

    With ``coarse=True`` (default) and a kernel wider than 3 voxels along an axis, the
    image is first averaged in blocks of ``f = floor(sigma_voxels / 3)`` voxels along
    that axis, filtered with the remaining width ``sqrt(sigma^2 - f^2 / 12) / f`` (block
    averaging already contributes variance ``f^2 / 12``), and brought back by separable
    linear interpolation. The output is smooth on the scale of ``sigma``, so this costs
    little accuracy and divides the FFT work by the product of the block factors.

    Parameters
    ----------
    image : (X, Y, Z) array_like, real or complex
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    fwhm_mm : float
        Full width at half maximum of the Gaussian kernel, mm.
    n_threads : int, optional
    coarse : bool, optional
        Allow the block-averaged computation (default True).
    window : tuple of 3 slices, optional
        Return only this sub-box of the filtered image (the filter still sees the whole
        image; values are those of the full output).

    Returns
    -------
    numpy.ndarray, same shape (or the window's shape), float32 or complex64
    """
    image = np.asarray(image)
    if np.iscomplexobj(image):
        image = image.astype(np.complex64, copy=False)
        re, im = _lowpass_parts((image.real, image.imag), voxel_size, fwhm_mm,
                                n_threads=n_threads, coarse=coarse, window=window)
        out = np.empty(re.shape, np.complex64)
        out.real, out.imag = re, im
        return out
    return _lowpass_parts((image.astype(np.float32, copy=False),), voxel_size, fwhm_mm,
                          n_threads=n_threads, coarse=coarse, window=window)[0]


def _lowpass_parts(parts, voxel_size, fwhm_mm, *, n_threads=1, coarse=True, window=None):
    """Gaussian low-pass of one real image or of the (real, imaginary) parts of one
    complex image (filtered together as complex); see :func:`gaussian_lowpass`."""
    from .bias import _block_mean, _upsample_linear

    shape = parts[0].shape
    if window is None:
        window = tuple(slice(0, n) for n in shape)
    window = tuple(slice(*w.indices(n)[:2]) for w, n in zip(window, shape))
    sigma = fwhm_mm / (2 * math.sqrt(2 * math.log(2))) / np.asarray(voxel_size, float)
    factors = tuple(max(1, int(s // 3)) if coarse else 1 for s in sigma)
    if any(f > 1 for f in factors):
        small = [_block_mean(p, factors) for p in parts]
        small_sigma = np.sqrt(np.maximum(sigma ** 2 - np.square(factors) / 12.0, 0.0)) \
            / np.asarray(factors)
    else:
        small, small_sigma = list(parts), sigma
    if len(parts) == 2:
        z = (small[0] + 1j * small[1]).astype(np.complex64)
        z = _gaussian_fft(z, small_sigma, n_threads)
        small = [z.real, z.imag]
    else:
        small = [_gaussian_fft(small[0].astype(np.float32), small_sigma, n_threads)]
    if any(f > 1 for f in factors):
        return [_upsample_linear(p, factors, shape, window=window).astype(np.float32,
                                                                           copy=False)
                for p in small]
    return [np.ascontiguousarray(p[window]) for p in small]


def _gaussian_fft(image, sigma, n_threads):
    """Gaussian filter with per-axis ``sigma`` (voxels) by FFT, mirrored padding."""
    is_complex = np.iscomplexobj(image)
    pads = [min(n - 1, int(math.ceil(3 * s))) for n, s in zip(image.shape, sigma)]
    padded = np.pad(image, [(p, p) for p in pads], mode="symmetric")
    shape = [sfft.next_fast_len(n, real=not is_complex) for n in padded.shape]
    transform = (sfft.fftn if is_complex else sfft.rfftn)(padded, s=shape, workers=n_threads)
    del padded
    for axis, (n, s) in enumerate(zip(shape, sigma)):
        if not is_complex and axis == 2:
            f = sfft.rfftfreq(n)
        else:
            f = sfft.fftfreq(n)
        g = np.exp(-2 * (np.pi * f * s) ** 2).astype(np.float32)
        transform *= g.reshape([-1 if a == axis else 1 for a in range(3)])
    if is_complex:
        out = sfft.ifftn(transform, s=shape, workers=n_threads)
    else:
        out = sfft.irfftn(transform, s=shape, workers=n_threads)
    del transform
    crop = tuple(slice(p, p + n) for p, n in zip(pads, image.shape))
    return np.ascontiguousarray(out[crop]).astype(image.dtype, copy=False)


def homodyne_highpass(magnitude, phase, voxel_size, fwhm_mm=12.0, *, n_threads=1,
                      mask=None):
    """Homodyne high-pass filtered phase: ``angle(z / lowpass(z))``, ``z = m exp(i p)``.

    The complex image is low-passed with a Gaussian of ``fwhm_mm`` FWHM (physical units,
    per-axis sigma from the voxel size); dividing by it removes the slowly varying
    background field and any receive-phase offset, leaving local phase.

    Parameters
    ----------
    magnitude, phase : (X, Y, Z) array_like
        Magnitude (weights) and phase in rad (wrapped or unwrapped).
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    fwhm_mm : float, optional
        Kernel FWHM in mm (default 12 mm).
    n_threads : int, optional
    mask : (X, Y, Z) array_like of bool, optional
        If given, the output is 0 outside the mask and the full-resolution work is done
        only in the mask's bounding box (the low-pass still sees the whole image, so
        values inside the mask are unchanged).

    Returns
    -------
    numpy.ndarray of float32
        High-pass phase in [-pi, pi].
    """
    magnitude = np.asarray(magnitude, dtype=np.float32)
    phase = np.asarray(phase, dtype=np.float32)
    window = None
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        window = _bounding_box(mask)
        if window is None:
            return np.zeros(magnitude.shape, np.float32)
    # z = m exp(i p) kept as float32 real and imaginary parts (no complex128 temporaries)
    re = np.cos(phase)
    re *= magnitude
    im = np.sin(phase)
    im *= magnitude
    low_re, low_im = _lowpass_parts((re, im), voxel_size, fwhm_mm, n_threads=n_threads,
                                    window=window)
    if window is not None:
        re, im = re[window], im[window]
    # angle(z * conj(low))
    real = re * low_re
    real += im * low_im
    im *= low_re
    re *= low_im
    im -= re
    del re, low_re, low_im
    out = np.arctan2(im, real).astype(np.float32, copy=False)
    if window is None:
        return out
    full = np.zeros(magnitude.shape, np.float32)
    full[window] = out
    full[~mask] = 0
    return full


def _bounding_box(mask):
    """Tuple of slices of the smallest box holding all True voxels (None if none)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def detect_handedness(magnitude, filtered_phase, affine, mask=None, *, fwhm_mm=12.0,
                      offset_mm=5.0, dark_fraction=0.01, erode_mm=20.0, n_threads=1):
    """Detect the phase sign convention from the dipole pattern around dark structures.

    Physics: around any paramagnetic source (microbleed, vein, relative to tissue) the
    field shift is positive at points displaced from it along B0 (scanner ``z``) and
    negative at points displaced perpendicular to B0 (sphere: +2 vs -1 (a/r)^3; a
    cylinder at any angle: positive along the projection of B0, negative across). Dark
    voxels on the magnitude are mostly such sources (veins, bleeds).

    Rule: take the ``dark_fraction`` locally darkest voxels (``1 - m / lowpass(m)``,
    ``fwhm_mm`` Gaussian) inside the head mask eroded by ``erode_mm`` (to leave out
    skull and scalp, which are dark but diamagnetic; the whole mask is used if the
    erosion leaves fewer than 1000 voxels). For each, sample the filtered phase (linear
    interpolation) at ``+-offset_mm`` along scanner ``z`` and along scanner ``x`` and
    ``y`` (directions mapped through the affine, so oblique/permuted/flipped storage is
    handled). Score = mean over dark voxels of ``phase(z offsets) - phase(x, y
    offsets)``. A positive score means phase = +gamma dB TE (``"left"``); negative means
    phase = -gamma dB TE (``"right"``). With fewer than 20 dark voxels the function
    returns ``"right"`` and a score of 0.

    Parameters
    ----------
    magnitude : (X, Y, Z) array_like
    filtered_phase : (X, Y, Z) array_like
        High-pass filtered phase (rad).
    affine : (4, 4) array_like
        Voxel to scanner RAS+ mm.
    mask : (X, Y, Z) array_like of bool, optional
        Head mask (default all voxels).
    fwhm_mm : float, optional
        Kernel FWHM in mm of the local mean magnitude (default 12 mm).
    offset_mm : float, optional
        Sampling distance from each dark voxel, mm (default 5 mm).
    dark_fraction : float, optional
        Fraction of the (eroded) mask taken as dark voxels (default 0.01).
    erode_mm : float, optional
        Erosion of the head mask, mm (default 20 mm).
    n_threads : int, optional

    Returns
    -------
    handedness : {"right", "left"}
    score : float
        Mean pole-minus-equator phase difference, rad; its size says how clear it was.
    n_dark : int
        Number of dark voxels used.
    """
    from scipy import ndimage

    from .bias import erode_mask_mm
    from .mip import voxel_sizes

    affine = np.asarray(affine, dtype=float)
    voxel_size = voxel_sizes(affine)
    magnitude = np.asarray(magnitude, dtype=np.float32)
    phase = np.asarray(filtered_phase, dtype=np.float32)
    if mask is None:
        mask = np.ones(magnitude.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    inner = mask
    if erode_mm > 0:
        inner = erode_mask_mm(mask, voxel_size, erode_mm)
        if inner.sum() < 1000:
            inner = mask
    # darkness is only needed inside ``inner``: full-resolution work in its bounding box
    box = _bounding_box(inner)
    if box is None:
        return "right", 0.0, 0
    mf = mask.astype(np.float32)
    local = gaussian_lowpass(magnitude * mf, voxel_size, fwhm_mm, n_threads=n_threads,
                             window=box)
    del mf
    local /= np.maximum(gaussian_lowpass(mask.astype(np.float32), voxel_size, fwhm_mm,
                                         n_threads=n_threads, window=box),
                        np.float32(1e-6))
    with np.errstate(invalid="ignore", divide="ignore"):
        dark = 1 - magnitude[box] / local
    dark = _finite(dark)
    del local
    inner = inner[box]
    values = dark[inner]
    if values.size == 0:
        return "right", 0.0, 0
    threshold = float(np.quantile(values, 1 - dark_fraction))
    points = np.argwhere(inner & (dark > threshold)).astype(np.float64)
    points += np.asarray([b.start for b in box], dtype=np.float64)
    if len(points) < 20:
        return "right", 0.0, int(len(points))
    to_index = np.linalg.inv(affine[:3, :3])
    samples = {}
    for name, direction in (("x", (1.0, 0, 0)), ("y", (0, 1.0, 0)), ("z", (0, 0, 1.0))):
        step = to_index @ (np.asarray(direction) * offset_mm)
        total = 0.0
        for sign in (1.0, -1.0):
            total = total + ndimage.map_coordinates(phase, (points + sign * step).T,
                                                    order=1, mode="nearest")
        samples[name] = total / 2
    score = float(np.mean(samples["z"] - (samples["x"] + samples["y"]) / 2))
    return ("left" if score > 0 else "right"), score, int(len(points))


def phase_mask(phase, handedness="right"):
    """Negative phase mask in [0, 1] for the paramagnetic phase sign.

    Parameters
    ----------
    phase : array_like
        Filtered phase in rad, [-pi, pi].
    handedness : {"right", "left"}
        ``"right"``: paramagnetic sources have negative phase (mask acts on phase < 0);
        ``"left"``: the phase is negated first.

    Returns
    -------
    numpy.ndarray of float32
        1 where the phase has the diamagnetic sign, ``(pi - |phase|) / pi`` where it has
        the paramagnetic sign.
    """
    if handedness not in ("right", "left"):
        raise ValueError(f"handedness must be 'right' or 'left', got {handedness!r}")
    phase = np.asarray(phase, dtype=np.float32)
    signed = phase if handedness == "right" else -phase
    return np.clip((np.float32(np.pi) + np.minimum(signed, 0)) / np.float32(np.pi),
                   0, 1).astype(np.float32)


def compute_swi(magnitude, filtered_phase, *, handedness="right", power=4):
    """SWI = magnitude x phase_mask ** power.

    Parameters
    ----------
    magnitude, filtered_phase : (X, Y, Z) array_like
    handedness : {"right", "left"}
    power : int, optional
        Exponent of the phase mask (default 4, Haacke et al. 2004).

    Returns
    -------
    numpy.ndarray of float32
    """
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    return (np.asarray(magnitude, dtype=np.float32)
            * phase_mask(filtered_phase, handedness) ** np.float32(power)).astype(np.float32)


def process_swi(magnitude, phase, affine, *, input_kind, echo_times=None, phase_units=None,
                handedness="auto", swi_power=4, highpass_mm=12.0, bias_correct=True,
                n4_options=None, magnitude_combination="rss", n_threads=1):
    """Full SWI chain on arrays: the image to detect microbleeds on.

    Steps by ``input_kind``:

    * ``"gre"``: phase -> radians, homodyne high-pass (``highpass_mm`` FWHM), SWI.
    * ``"megre"`` with phase: magnitude RSS over echoes; each echo's phase -> radians,
      Laplacian-unwrapped, echoes aligned; frequency from a magnitude^2-weighted
      linear fit over TE; combined phase = frequency x mean TE; homodyne high-pass; SWI.
    * ``"megre"`` without phase, ``"magnitude"``, ``"swi"``: the (combined) image as is.

    The head mask (Otsu + morphology in mm) is computed on the combined magnitude; N4 is
    fitted on the combined magnitude inside it and its field divides magnitude and SWI.

    Parameters
    ----------
    magnitude : (X, Y, Z[, E]) array_like
    phase : (X, Y, Z[, E]) array_like or None
    affine : (4, 4) array_like
    input_kind : {"gre", "megre", "swi", "magnitude"}
    echo_times : list of float, optional
        Seconds.
    phase_units : {"rad", "arbitrary", None}, optional
    handedness : {"auto", "right", "left"}, optional
    swi_power : int, optional
        Phase-mask exponent (default 4).
    highpass_mm : float, optional
        Homodyne filter Gaussian FWHM in mm (default 12).
    bias_correct : bool, optional
        Run N4 (default True).
    n4_options : dict, optional
        Keyword arguments for :func:`cmbprep.algorithms.bias.n4_bias_field`
        (``working_resolution_mm``, ``spline_distance_mm``, ``shrink_factor``,
        ``iterations``, ``tolerance``).
    magnitude_combination : {"rss", "mean"}, optional
    n_threads : int, optional

    Returns
    -------
    dict
        ``swi``, ``magnitude``, ``filtered_phase`` (None without phase), ``head_mask``,
        ``bias_field`` arrays and ``meta`` (dict of every parameter used).
    """
    from .bias import head_mask as compute_head_mask
    from .bias import start_n4_bias_field
    from .mip import voxel_sizes

    if input_kind not in _VALID_KINDS:
        raise ValueError(f"input_kind must be one of {_VALID_KINDS}, got {input_kind!r}")
    if handedness not in ("auto", "right", "left"):
        raise ValueError(f"handedness must be auto/right/left, got {handedness!r}")
    affine = np.asarray(affine, dtype=float)
    voxel_size = voxel_sizes(affine)
    mag = _finite(np.asarray(magnitude, dtype=np.float32))
    if mag.ndim == 3:
        mag = mag[..., None]
    # clip negatives into a new echo-major array; skipped (no copy, the input is only
    # read) when nothing is negative and the layout already suits per-echo work
    if (mag < 0).any() or not _is_echo_major(mag):
        mag = np.maximum(mag, 0, out=_empty_echo_major(mag.shape))
    has_phase = phase is not None and input_kind in ("gre", "megre")
    meta = {
        "InputKind": input_kind,
        "EchoTimes": list(echo_times) if echo_times is not None else "n/a",
        "VoxelSize": [round(float(v), 6) for v in voxel_size],
        "MagnitudeCombination": magnitude_combination if mag.shape[3] > 1 else "n/a",
        "PhaseUsed": bool(has_phase),
    }
    combined = combine_magnitude(mag, magnitude_combination) if mag.shape[3] > 1 \
        else mag[..., 0]
    mask = compute_head_mask(combined, voxel_size)
    meta["HeadMask"] = "Otsu on 2 mm block means (4 mm FWHM smoothing), closing 6 mm, " \
                       "hole filling, largest component, dilation 2 mm"
    if bias_correct:
        # N4 needs only the combined magnitude and the mask: its ANTs fit runs in a
        # forked child process while the phase is processed here (same result)
        options = {"working_resolution_mm": 4.0, "spline_distance_mm": 100.0,
                   "shrink_factor": 2, "iterations": [50, 50, 30], "tolerance": 1e-6}
        options.update(n4_options or {})
        n4_result = start_n4_bias_field(combined, voxel_size, mask, n_threads=n_threads,
                                        **options)
    filtered = None
    if has_phase:
        ph = np.asarray(phase, dtype=np.float32)
        if ph.ndim == 3:
            ph = ph[..., None]
        ph, scaling = phase_to_radians(ph, phase_units)
        ph = _echo_major(ph)
        meta["PhaseUnits"] = phase_units or "n/a"
        meta["PhaseScaling"] = scaling
        if mag.shape[3] > 1:
            if echo_times is None or len(echo_times) != mag.shape[3]:
                raise DataError(f"EchoTime needed for each of {mag.shape[3]} echoes, got "
                                f"{echo_times}")
            unwrapped = unwrap_echoes(ph, mag, voxel_size, mask=mask, n_threads=n_threads)
            omega = fit_frequency(unwrapped, mag, echo_times)
            del unwrapped
            te_ref = float(np.mean(echo_times))
            combined_phase = omega * np.float32(te_ref)
            meta["PhaseUnwrapping"] = "Laplacian (DCT, Neumann), congruent, echoes aligned"
            meta["PhaseCombination"] = "magnitude^2-weighted linear fit phi0 + omega*TE"
            meta["ReferenceEchoTime"] = te_ref
        else:
            combined_phase = ph[..., 0]
            meta["PhaseUnwrapping"] = "n/a (homodyne filter on wrapped phase)"
            meta["ReferenceEchoTime"] = (float(echo_times[0]) if echo_times
                                         and echo_times[0] is not None else "n/a")
        filtered = homodyne_highpass(combined, combined_phase, voxel_size, highpass_mm,
                                     n_threads=n_threads, mask=mask)
        del combined_phase
        meta["HighPassFilter"] = "homodyne: angle(z / gaussian_lowpass(z))"
        meta["HighPassFWHMmm"] = float(highpass_mm)
        if handedness == "auto":
            detected, score, n_dark = detect_handedness(
                combined, filtered, affine, mask, fwhm_mm=highpass_mm,
                n_threads=n_threads)
            meta["HandednessDetection"] = {
                "Score": round(score, 6), "DarkVoxels": n_dark,
                "Rule": "mean filtered phase 5 mm along B0 minus 5 mm across B0 around "
                        "the 1% locally darkest voxels of the head mask eroded by 20 mm "
                        "(positive: left, negative: right)"}
            used = detected
        else:
            used = handedness
        meta["Handedness"] = used
        meta["HandednessRequested"] = handedness
        meta["SWIPower"] = int(swi_power)
        swi = compute_swi(combined, filtered, handedness=used, power=swi_power)
    else:
        swi = combined.copy()
        meta["SWIPower"] = "n/a"
        meta["Handedness"] = "n/a"
    if bias_correct:
        field = n4_result()
        combined = combined / field
        swi = swi / field
        meta["BiasCorrection"] = {
            "Method": "N4 (ANTsPy), fitted on the combined magnitude in the head mask",
            "WorkingResolutionmm": float(options["working_resolution_mm"]),
            "SplineDistancemm": float(options["spline_distance_mm"]),
            "ShrinkFactor": int(options["shrink_factor"]),
            "Iterations": [int(i) for i in options["iterations"]],
            "Tolerance": float(options["tolerance"])}
    else:
        field = np.ones(combined.shape, dtype=np.float32)
        combined = combined.copy()  # never return a view of the input
        meta["BiasCorrection"] = "none"
    return {"swi": swi.astype(np.float32, copy=False),
            "magnitude": combined.astype(np.float32, copy=False),
            "filtered_phase": filtered, "head_mask": mask, "bias_field": field,
            "meta": meta}
