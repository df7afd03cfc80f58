"""Smooth random fields (sums of random plane cosines) used for the deformation, the
background field, the receive phase offset and the receive bias."""

from __future__ import annotations

import numpy as np

__all__ = ["SmoothField"]


class SmoothField:
    """Smooth random function of scanner position: a sum of random plane cosines with
    wavelengths in ``wavelength_mm``, scaled so that its peak magnitude is at most 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the directions, wavelengths, phases and amplitudes (in that order).
    centre : array of 3 float
        Scanner mm point where the cosine phases are defined.
    n_terms : int
    wavelength_mm : (float, float)
        Range of the wavelengths (uniform), mm.
    """

    def __init__(self, rng, centre, n_terms=6, wavelength_mm=(120.0, 300.0)):
        k = rng.normal(size=(n_terms, 3))
        self.k = k / np.linalg.norm(k, axis=1, keepdims=True)
        self.wavelength = rng.uniform(*wavelength_mm, n_terms)
        self.phase = rng.uniform(0, 2 * np.pi, n_terms)
        amp = rng.normal(size=n_terms)
        self.amp = amp / np.abs(amp).sum()
        self.centre = np.asarray(centre, float)

    def on_grid(self, affine, shape) -> np.ndarray:
        """Evaluate on the voxel centres of a grid (separable: no coordinate arrays)."""
        out = np.zeros(shape, np.float32)
        origin = affine[:3, 3] - self.centre
        for k, lam, ph, a in zip(self.k, self.wavelength, self.phase, self.amp):
            kk = 2 * np.pi * k / lam
            per_axis = affine[:3, :3].T @ kk  # phase increment per voxel along each axis
            e = [np.exp(1j * per_axis[d] * np.arange(n)).astype(np.complex64)
                 for d, n in enumerate(shape)]
            c0 = np.complex64(np.exp(1j * (kk @ origin + ph)))
            out += np.float32(a) * (c0 * e[0][:, None, None] * e[1][None, :, None]
                                    * e[2][None, None, :]).real
        return out
