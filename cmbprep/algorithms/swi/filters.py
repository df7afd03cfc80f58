"""Gaussian low-pass (FWHM in mm, by FFT) and the homodyne high-pass filter of the phase.

Where the kernel is wide, the low-pass runs on block means and is linearly interpolated
back (:func:`cmbprep.algorithms.arrays.block_reduce`, :func:`~.arrays.upsample_linear`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ..arrays import block_reduce, bounding_box, upsample_linear

__all__ = ["gaussian_lowpass", "homodyne_highpass"]


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
    shape = parts[0].shape
    if window is None:
        window = tuple(slice(0, n) for n in shape)
    window = tuple(slice(*w.indices(n)[:2]) for w, n in zip(window, shape))
    sigma = fwhm_mm / (2 * math.sqrt(2 * math.log(2))) / np.asarray(voxel_size, float)
    factors = tuple(max(1, int(s // 3)) if coarse else 1 for s in sigma)
    if any(f > 1 for f in factors):
        small = [block_reduce(p, factors) for p in parts]
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
        return [upsample_linear(p, factors, shape, window=window).astype(np.float32,
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
        window = bounding_box(mask)
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
