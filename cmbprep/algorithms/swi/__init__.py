"""Susceptibility-weighted imaging (SWI) from GRE magnitude and phase.

All functions are pure (numpy/scipy); arrays are in stored voxel order and the voxel
size or affine comes from the image header. See ``docs/swi.rst`` for the methods.

Modules, in the order the chain uses them:

* :mod:`.inputs` — reading echoes from NIfTI and checking the inputs;
* :mod:`.layout` — echo-major memory layout, non-finite values set to 0;
* :mod:`.magnitude` — cleaning and combining the magnitude echoes;
* :mod:`.phase` — phase to radians, wrapping, Laplacian unwrapping, frequency fit;
* :mod:`.filters` — Gaussian low-pass in mm, homodyne high-pass;
* :mod:`.handedness` — detecting the phase sign convention;
* :mod:`.contrast` — the negative phase mask and the SWI;
* :mod:`.chain` — the steps of the chain and :func:`process_swi`.

Phase sign convention (``handedness``)
--------------------------------------
``"right"``: phase = -gamma * dB * TE, so a paramagnetic source (vein, microbleed) gives a
negative phase along B0 (Haacke et al. 2004, the Siemens convention). ``"left"``: phase
= +gamma * dB * TE. Internally the phase is flipped to the ``"right"`` convention and the
negative phase mask is applied: ``mask = 1`` for phase >= 0 and ``(pi + phase) / pi`` for
``-pi < phase < 0``; ``SWI = magnitude * mask ** power``.
"""

from .chain import (
    MEGRE_ECHOES,
    apply_swi_contrast,
    confirm_handedness_in_brain,
    filter_phase,
    fit_bias_field,
    longest_echo,
    prepare_magnitude,
    process_swi,
)
from .contrast import compute_swi, phase_mask
from .filters import gaussian_lowpass, homodyne_highpass
from .handedness import calibrate_handedness_on_veins, detect_handedness
from .inputs import INPUT_KINDS, check_swi_inputs, load_echoes, looks_like_phase
from .magnitude import clean_magnitude, combine_magnitude
from .phase import (
    fit_frequency,
    phase_to_radians,
    unwrap_echoes,
    unwrap_phase_laplacian,
    wrap_phase,
)


def source_fingerprint() -> str:
    """SHA-256 prefix (16 hex digits) of this package's source (every ``.py`` file, name
    and content): the cache key of results made by the SWI chain (the workflow's
    ``code_id``, the detector training's scan cache)."""
    from pathlib import Path

    from ...utils.io import python_sources_fingerprint

    return python_sources_fingerprint(Path(__file__).parent)


__all__ = [
    "INPUT_KINDS",
    "MEGRE_ECHOES",
    "longest_echo",
    "source_fingerprint",
    "load_echoes",
    "check_swi_inputs",
    "phase_to_radians",
    "looks_like_phase",
    "wrap_phase",
    "unwrap_phase_laplacian",
    "unwrap_echoes",
    "clean_magnitude",
    "combine_magnitude",
    "fit_frequency",
    "gaussian_lowpass",
    "homodyne_highpass",
    "calibrate_handedness_on_veins",
    "detect_handedness",
    "phase_mask",
    "compute_swi",
    "prepare_magnitude",
    "filter_phase",
    "fit_bias_field",
    "apply_swi_contrast",
    "confirm_handedness_in_brain",
    "process_swi",
]
