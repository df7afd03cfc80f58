"""Magnitude echoes: cleaning to finite, non-negative echo-major arrays and combining the
echoes into one image."""

from __future__ import annotations

import numpy as np

from .layout import empty_echo_major, is_echo_major, zero_nonfinite

__all__ = ["clean_magnitude", "combine_magnitude"]


def clean_magnitude(magnitude):
    """Magnitude as a finite, non-negative (X, Y, Z, E) float32 array, echo-major.

    Non-finite values become 0 and negative values are clipped to 0. The input is
    returned unchanged (no copy; it is only read later) when it already is float32,
    finite, non-negative and echo-major.

    Parameters
    ----------
    magnitude : (X, Y, Z[, E]) array_like

    Returns
    -------
    numpy.ndarray of float32, (X, Y, Z, E)
    """
    mag = zero_nonfinite(np.asarray(magnitude, dtype=np.float32))
    if mag.ndim == 3:
        mag = mag[..., None]
    # clip negatives into a new echo-major array; skipped (no copy, the input is only
    # read) when nothing is negative and the layout already suits per-echo work
    if (mag < 0).any() or not is_echo_major(mag):
        mag = np.maximum(mag, 0, out=empty_echo_major(mag.shape))
    return mag


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
