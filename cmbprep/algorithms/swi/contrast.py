"""SWI contrast: the negative phase mask and ``SWI = magnitude x mask ** power``.

Phase sign convention (``handedness``): ``"right"``: phase = -gamma * dB * TE, so a
paramagnetic source (vein, microbleed) gives a negative phase along B0 (Haacke et al.
2004, the Siemens convention). ``"left"``: phase = +gamma * dB * TE. The mask acts on the
paramagnetic sign: ``mask = 1`` for the diamagnetic sign and ``(pi - |phase|) / pi`` for
the paramagnetic sign.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_swi", "phase_mask"]


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
