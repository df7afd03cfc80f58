"""Memory layout and cleaning of (X, Y, Z, E) echo arrays.

Multi-echo arrays are indexed (X, Y, Z, E) but stored *echo-major* (each echo contiguous
in memory), so per-echo work (unwrapping, alignment, the frequency fit) does not stride
through memory. Non-finite values are set to 0 before any processing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["echo_major", "empty_echo_major", "is_echo_major", "zero_nonfinite"]


def empty_echo_major(shape, dtype=np.float32):
    """Uninitialised (X, Y, Z, E) array whose echoes are each contiguous in memory."""
    return np.moveaxis(np.empty((shape[3],) + tuple(shape[:3]), dtype), 0, 3)


def is_echo_major(array):
    """Whether ``array`` is 4D with each echo contiguous in memory."""
    return array.ndim == 4 and np.moveaxis(array, 3, 0).flags.c_contiguous


def echo_major(array):
    """(X, Y, Z, E) array with each echo contiguous (per-echo work without strides);
    ``array`` itself when it already is (or is not 4D)."""
    if array.ndim != 4 or np.moveaxis(array, 3, 0).flags.c_contiguous:
        return array
    out = empty_echo_major(array.shape, array.dtype)
    out[...] = array
    return out


def zero_nonfinite(array):
    """``array`` with NaN/inf set to 0 (the array itself when all values are finite)."""
    if np.isfinite(array).all():
        return array
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
