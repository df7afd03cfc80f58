"""The SWI chain as named steps, and :func:`process_swi`, which runs them in order.

Steps (each a function of arrays; the Nipype workflow runs each in its own node):

1. :func:`prepare_magnitude`: clean the magnitude echoes, combine them, head mask.
2. :func:`filter_phase` (with phase): radians, multi-echo unwrapping and frequency fit,
   homodyne high-pass, phase sign convention.
3. :func:`fit_bias_field`: N4 on the combined magnitude inside the head mask
   (independent of step 2).
4. :func:`apply_swi_contrast`: SWI from magnitude and filtered phase, both divided by
   the bias field.
5. :func:`confirm_handedness_in_brain` (with phase, once a brain mask exists; the
   pipeline runs it after brain extraction, :func:`process_swi` does not): the phase
   sign convention decided again inside the brain; where it differs from step 2's, the
   SWI is made again with it.

Every step returns the part of the metadata (``swi_meta``) it is responsible for;
merged in the order 1, 2, 4, 3 they give the dict :func:`process_swi` returns.
"""

from __future__ import annotations

import numpy as np

from ...errors import DataError
from ..arrays import voxel_sizes
from ..bias import n4_bias_field
from ..headmask import head_mask
from .contrast import compute_swi
from .filters import homodyne_highpass
from .handedness import VEIN_CALIBRATION, calibrate_handedness_on_veins, detect_handedness
from .inputs import INPUT_KINDS
from .layout import echo_major
from .magnitude import clean_magnitude, combine_magnitude
from .phase import fit_frequency, phase_to_radians, unwrap_echoes

__all__ = ["MEGRE_ECHOES", "N4_DEFAULTS", "apply_swi_contrast", "filter_phase",
           "fit_bias_field", "longest_echo", "prepare_magnitude", "process_swi"]

#: How multi-echo GRE with phase becomes one SWI: ``"longest"``, the echo with the
#: longest echo time alone (magnitude and phase, as single-echo GRE); ``"fit"``, the RSS
#: magnitude and the fitted frequency x mean echo time.
MEGRE_ECHOES = ("longest", "fit")

#: N4 settings of the chain (see :func:`cmbprep.algorithms.bias.n4_bias_field`)
N4_DEFAULTS = {"working_resolution_mm": 4.0, "spline_distance_mm": 100.0,
               "shrink_factor": 2, "iterations": [50, 50, 30], "tolerance": 1e-6}

_HEAD_MASK_RULE = ("Otsu on 2 mm block means (4 mm FWHM smoothing), closing 6 mm, "
                   "hole filling, largest component, dilation 2 mm")
_VEIN_RULE = ("sign of the correlation of the filtered phase with the dipole field of "
              "the dark elongated components of the magnitude (veins) in the head mask "
              "eroded by 10 mm (positive: left, negative: right); the pole-minus-equator "
              "rule ('Rule') when no vein is found or |correlation| < 0.1")
_HANDEDNESS_RULE = ("mean filtered phase 5 mm along B0 minus 5 mm across B0 around the "
                    "1% locally darkest voxels of the head mask eroded by 20 mm "
                    "(positive: left, negative: right)")
_IN_BRAIN_RULE = ("mean filtered phase 5 mm along B0 minus 5 mm across B0 around the "
                  "1% locally darkest voxels of the brain mask (positive: left, negative: "
                  "right); decides when it has at least 20 dark voxels")
#: Fewest dark voxels with which the second pass decides.
MIN_DARK_VOXELS_IN_BRAIN = 20


def process_swi(magnitude, phase, affine, *, input_kind, echo_times=None, phase_units=None,
                handedness="auto", swi_power=4, highpass_mm=12.0, bias_correct=True,
                n4_options=None, magnitude_combination="rss", megre_echoes="longest",
                n_threads=1):
    """Full SWI chain on arrays: the image to detect microbleeds on.

    Steps by ``input_kind``:

    * ``"gre"``: phase -> radians, homodyne high-pass (``highpass_mm`` FWHM), SWI.
    * ``"megre"`` with phase, ``megre_echoes="longest"`` (default): the echo with the
      longest echo time, magnitude and phase, processed as ``"gre"``.
    * ``"megre"`` with phase, ``megre_echoes="fit"``: magnitude RSS over echoes; each
      echo's phase -> radians, Laplacian-unwrapped, echoes aligned; frequency from a
      magnitude^2-weighted linear fit over TE; combined phase = frequency x mean TE;
      homodyne high-pass; SWI.
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
        Combination of the magnitude echoes where several are combined.
    megre_echoes : {"longest", "fit"}, optional
        Multi-echo GRE with phase: the longest echo alone or the fit over all echoes
        (:data:`MEGRE_ECHOES`).
    n_threads : int, optional

    Returns
    -------
    dict
        ``swi``, ``magnitude``, ``filtered_phase`` (None without phase), ``head_mask``,
        ``bias_field`` arrays and ``meta`` (dict of every parameter used).
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    if handedness not in ("auto", "right", "left"):
        raise ValueError(f"handedness must be auto/right/left, got {handedness!r}")
    affine = np.asarray(affine, dtype=float)
    has_phase = phase is not None and input_kind in ("gre", "megre")
    echoes, combined, mask, meta = prepare_magnitude(
        magnitude, affine, input_kind=input_kind, echo_times=echo_times,
        has_phase=has_phase, magnitude_combination=magnitude_combination,
        megre_echoes=megre_echoes)
    filtered, used = None, None
    if has_phase:
        filtered, used, phase_meta = filter_phase(
            echoes, combined, phase, mask, affine, echo_times=echo_times,
            phase_units=phase_units, handedness=handedness, highpass_mm=highpass_mm,
            megre_echoes=megre_echoes, n_threads=n_threads)
        meta.update(phase_meta)
    del echoes
    if bias_correct:
        field, bias_meta = fit_bias_field(combined, mask, voxel_sizes(affine),
                                          n4_options=n4_options, n_threads=n_threads)
    else:
        field, bias_meta = None, {"BiasCorrection": "none"}
    swi, corrected, swi_meta = apply_swi_contrast(combined, filtered, field,
                                                  handedness=used, swi_power=swi_power)
    meta.update(swi_meta)
    meta.update(bias_meta)
    if field is None:
        field = np.ones(combined.shape, dtype=np.float32)
    return {"swi": swi, "magnitude": corrected, "filtered_phase": filtered,
            "head_mask": mask, "bias_field": field, "meta": meta}


def longest_echo(echo_times):
    """Index of the echo with the longest echo time (the first of equal ones).

    Parameters
    ----------
    echo_times : sequence of float
        Seconds, one per echo.

    Raises
    ------
    DataError
        No echo times, or one missing.
    """
    if not echo_times or any(t is None for t in echo_times):
        raise DataError(f"EchoTime needed for each echo to find the longest, got "
                        f"{echo_times}")
    return int(np.argmax(np.asarray(echo_times, dtype=float)))


def _megre_single_echo(input_kind, has_phase, megre_echoes, n_echoes):
    """Whether the chain keeps only the longest echo of several (``megre_echoes``)."""
    if megre_echoes not in MEGRE_ECHOES:
        raise ValueError(f"megre_echoes must be one of {MEGRE_ECHOES}, got {megre_echoes!r}")
    return (input_kind == "megre" and has_phase and megre_echoes == "longest"
            and n_echoes > 1)


def prepare_magnitude(magnitude, affine, *, input_kind, echo_times=None, has_phase,
                      magnitude_combination="rss", megre_echoes="longest"):
    """Step 1: cleaned echoes, combined magnitude and head mask.

    Parameters
    ----------
    magnitude : (X, Y, Z[, E]) array_like
    affine : (4, 4) array_like
    input_kind : {"gre", "megre", "swi", "magnitude"}
    echo_times : list of float, optional
    has_phase : bool
        Whether the phase will be used (recorded as ``PhaseUsed``).
    magnitude_combination : {"rss", "mean"}, optional
    megre_echoes : {"longest", "fit"}, optional
        ``"longest"``: multi-echo GRE with phase keeps only its longest echo.

    Returns
    -------
    echoes : (X, Y, Z, E) numpy.ndarray of float32
        Finite, non-negative, echo-major (:func:`.magnitude.clean_magnitude`); only the
        longest echo where ``megre_echoes`` keeps it alone.
    combined : (X, Y, Z) numpy.ndarray of float32
        Echoes combined (the single echo itself).
    mask : (X, Y, Z) numpy.ndarray of bool
        Head mask (:func:`cmbprep.algorithms.headmask.head_mask`).
    meta : dict
        ``InputKind``, ``EchoTimes``, ``VoxelSize``, ``MagnitudeCombination``,
        ``PhaseUsed``, ``HeadMask`` (and ``EchoUsed`` where one echo of several is kept).
    """
    voxel_size = voxel_sizes(affine)
    echoes = clean_magnitude(magnitude)
    meta = {
        "InputKind": input_kind,
        "EchoTimes": list(echo_times) if echo_times is not None else "n/a",
        "VoxelSize": [round(float(v), 6) for v in voxel_size],
        "MagnitudeCombination": magnitude_combination if echoes.shape[3] > 1 else "n/a",
        "PhaseUsed": bool(has_phase),
    }
    if _megre_single_echo(input_kind, has_phase, megre_echoes, echoes.shape[3]):
        k = longest_echo(echo_times)
        echoes = echoes[..., k:k + 1]
        meta["MagnitudeCombination"] = "n/a (the longest echo alone)"
        meta["EchoUsed"] = {"Index": k, "EchoTime": float(echo_times[k]),
                            "Rule": "the longest echo time, magnitude and phase alone"}
    combined = combine_magnitude(echoes, magnitude_combination) if echoes.shape[3] > 1 \
        else echoes[..., 0]
    mask = head_mask(combined, voxel_size)
    meta["HeadMask"] = _HEAD_MASK_RULE
    return echoes, combined, mask, meta


def filter_phase(echoes, combined, phase, mask, affine, *, echo_times=None,
                 phase_units=None, handedness="auto", highpass_mm=12.0,
                 megre_echoes="longest", n_threads=1):
    """Step 2: the high-pass filtered phase and the phase sign convention to use.

    Parameters
    ----------
    echoes : (X, Y, Z, E) numpy.ndarray of float32
        Cleaned magnitude echoes (weights of unwrapping and fit).
    combined : (X, Y, Z) numpy.ndarray of float32
        Combined magnitude.
    phase : (X, Y, Z[, E]) array_like
        Stored phase, one volume per echo.
    mask : (X, Y, Z) numpy.ndarray of bool
        Head mask.
    affine : (4, 4) array_like
    echo_times : list of float, optional
        Seconds; needed for several echoes.
    phase_units : {"rad", "arbitrary", None}, optional
    handedness : {"auto", "right", "left"}, optional
    highpass_mm : float, optional
    megre_echoes : {"longest", "fit"}, optional
        Several echoes: the phase of the longest alone (``echoes`` may then hold all
        echoes or that one) or the frequency fit over all.
    n_threads : int, optional

    Returns
    -------
    filtered : (X, Y, Z) numpy.ndarray of float32
        High-pass filtered phase (rad), 0 outside the mask.
    used : {"right", "left"}
        The convention detected (``"auto"``) or requested.
    meta : dict
        ``PhaseUnits``, ``PhaseScaling``, unwrapping and combination, high-pass,
        ``HandednessDetection`` (``"auto"``), ``Handedness``, ``HandednessRequested``.

    Raises
    ------
    DataError
        Several echoes without one echo time per echo.
    """
    voxel_size = voxel_sizes(affine)
    ph = np.asarray(phase, dtype=np.float32)
    if ph.ndim == 3:
        ph = ph[..., None]
    ph, scaling = phase_to_radians(ph, phase_units)
    ph = echo_major(ph)
    if _megre_single_echo("megre", True, megre_echoes, ph.shape[3]):
        k = longest_echo(echo_times)
        ph, echo_times = ph[..., k:k + 1], [echo_times[k]]
        echoes = echoes[..., k:k + 1] if echoes.shape[3] > 1 else echoes
    meta = {"PhaseUnits": phase_units or "n/a", "PhaseScaling": scaling}
    combined_phase, combination_meta = _combine_phase_echoes(
        ph, echoes, mask, voxel_size, echo_times, n_threads=n_threads)
    meta.update(combination_meta)
    filtered = homodyne_highpass(combined, combined_phase, voxel_size, highpass_mm,
                                 n_threads=n_threads, mask=mask)
    del combined_phase
    meta["HighPassFilter"] = "homodyne: angle(z / gaussian_lowpass(z))"
    meta["HighPassFWHMmm"] = float(highpass_mm)
    used = handedness
    if handedness == "auto":
        # the global vein fit first; the local pole-minus-equator rule when no vein found
        vein_hand, corr, n_vein = calibrate_handedness_on_veins(
            combined, filtered, affine, mask, **VEIN_CALIBRATION)
        local_hand, score, n_dark = detect_handedness(
            combined, filtered, affine, mask, fwhm_mm=highpass_mm, n_threads=n_threads)
        used = vein_hand or local_hand
        meta["HandednessDetection"] = {
            "Method": "veins" if vein_hand else "pole-minus-equator",
            "VeinCorrelation": round(corr, 6) if np.isfinite(corr) else "n/a",
            "VeinVoxels": n_vein, "VeinRule": _VEIN_RULE,
            "Score": round(score, 6), "DarkVoxels": n_dark, "Rule": _HANDEDNESS_RULE}
    meta["Handedness"] = used
    meta["HandednessRequested"] = handedness
    return filtered, used, meta


def _combine_phase_echoes(phase, echoes, mask, voxel_size, echo_times, *, n_threads=1):
    """One phase image (rad) from the echoes: the single echo as is, or for several
    echoes the fitted frequency x mean echo time (after Laplacian unwrapping)."""
    n_echoes = echoes.shape[3]
    if n_echoes == 1:
        reference_te = (float(echo_times[0]) if echo_times and echo_times[0] is not None
                        else "n/a")
        return phase[..., 0], {"PhaseUnwrapping": "n/a (homodyne filter on wrapped phase)",
                               "ReferenceEchoTime": reference_te}
    if echo_times is None or len(echo_times) != n_echoes:
        raise DataError(f"EchoTime needed for each of {n_echoes} echoes, got "
                        f"{echo_times}")
    unwrapped = unwrap_echoes(phase, echoes, voxel_size, mask=mask, n_threads=n_threads)
    omega = fit_frequency(unwrapped, echoes, echo_times)
    del unwrapped
    te_ref = float(np.mean(echo_times))
    return omega * np.float32(te_ref), {
        "PhaseUnwrapping": "Laplacian (DCT, Neumann), congruent, echoes aligned",
        "PhaseCombination": "magnitude^2-weighted linear fit phi0 + omega*TE",
        "ReferenceEchoTime": te_ref}


def fit_bias_field(combined, mask, voxel_size, *, n4_options=None, n_threads=1):
    """Step 3: N4 bias field of the combined magnitude inside the head mask.

    Parameters
    ----------
    combined : (X, Y, Z) numpy.ndarray of float32
    mask : (X, Y, Z) numpy.ndarray of bool
    voxel_size : sequence of 3 floats
        Voxel size in mm.
    n4_options : dict, optional
        Overrides of :data:`N4_DEFAULTS`.
    n_threads : int, optional
        ITK threads.

    Returns
    -------
    field : (X, Y, Z) numpy.ndarray of float32
    meta : dict
        ``{"BiasCorrection": {...}}`` with the N4 settings.
    """
    options = dict(N4_DEFAULTS)
    options.update(n4_options or {})
    field = n4_bias_field(combined, voxel_size, mask, n_threads=n_threads, **options)
    return field, {"BiasCorrection": {
        "Method": "N4 (ANTsPy), fitted on the combined magnitude in the head mask",
        "WorkingResolutionmm": float(options["working_resolution_mm"]),
        "SplineDistancemm": float(options["spline_distance_mm"]),
        "ShrinkFactor": int(options["shrink_factor"]),
        "Iterations": [int(i) for i in options["iterations"]],
        "Tolerance": float(options["tolerance"])}}


def apply_swi_contrast(combined, filtered, field, *, handedness, swi_power):
    """Step 4: SWI (or the magnitude as is, without phase), corrected by the field.

    Parameters
    ----------
    combined : (X, Y, Z) numpy.ndarray of float32
    filtered : (X, Y, Z) numpy.ndarray of float32 or None
        Filtered phase; None without phase (the SWI is then the magnitude).
    field : (X, Y, Z) numpy.ndarray of float32 or None
        Bias field dividing SWI and magnitude; None for no correction.
    handedness : {"right", "left"} or None
        Convention of ``filtered`` (ignored without phase).
    swi_power : int

    Returns
    -------
    swi, magnitude : (X, Y, Z) numpy.ndarray of float32
        New arrays (never views of ``combined``).
    meta : dict
        ``SWIPower`` (and ``Handedness`` ``"n/a"`` without phase).
    """
    if filtered is not None:
        meta = {"SWIPower": int(swi_power)}
        swi = compute_swi(combined, filtered, handedness=handedness, power=swi_power)
    else:
        swi = combined.copy()
        meta = {"SWIPower": "n/a", "Handedness": "n/a"}
    if field is not None:
        magnitude = combined / field
        swi = swi / field
    else:
        magnitude = combined.copy()  # never return a view of the input
    return (swi.astype(np.float32, copy=False), magnitude.astype(np.float32, copy=False),
            meta)


def confirm_handedness_in_brain(magnitude, filtered_phase, affine, brain_mask, handedness,
                                *, highpass_mm=12.0, n_threads=1):
    """Step 5: the phase sign convention decided again, inside the brain mask.

    Step 2 decides before brain extraction, inside the head mask (eroded by 10 or 20 mm),
    where dark structures outside the brain (sinuses, skull base, an elongated void that
    looks like a vein) can outvote the veins. Inside the brain, the locally darkest
    voxels are veins and microbleeds, all paramagnetic, so the pole-minus-equator rule
    (:func:`~.handedness.detect_handedness` with the brain mask, not eroded) reads their
    field. On the 283 simulated scans with phase of the training cache (seven vein
    models, phantom brain masks) it was right on all 283, step 2 on 279
    (``docs/swi.rst``). It decides when it finds at least
    :data:`MIN_DARK_VOXELS_IN_BRAIN` dark voxels; otherwise step 2's convention stands.

    Parameters
    ----------
    magnitude : (X, Y, Z) array_like
        The bias-corrected magnitude (step 4's ``magnitude``).
    filtered_phase : (X, Y, Z) array_like
        Step 2's filtered phase (rad); it does not depend on the convention.
    affine : (4, 4) array_like
    brain_mask : (X, Y, Z) array_like of bool
    handedness : {"right", "left"}
        Step 2's convention.
    highpass_mm : float, optional
        FWHM of the local mean magnitude the darkness is measured against (step 2 uses
        the high-pass width).
    n_threads : int, optional

    Returns
    -------
    used : {"right", "left"}
        The convention to use: the one found inside the brain, or ``handedness`` when
        the brain gave no decision.
    meta : dict
        ``Handedness`` (found inside the brain, ``"n/a"`` without a decision),
        ``Score``, ``DarkVoxels``, ``Rule`` and ``Changed`` (whether ``used`` differs
        from ``handedness``).
    """
    if handedness not in ("right", "left"):
        raise ValueError(f"handedness must be right/left, got {handedness!r}")
    found, score, n_dark = detect_handedness(
        magnitude, filtered_phase, affine, np.asarray(brain_mask, dtype=bool),
        fwhm_mm=highpass_mm, erode_mm=0.0, n_threads=n_threads)
    decided = n_dark >= MIN_DARK_VOXELS_IN_BRAIN and score != 0
    used = found if decided else handedness
    return used, {"Handedness": found if decided else "n/a", "Score": round(float(score), 6),
                  "DarkVoxels": int(n_dark), "Rule": _IN_BRAIN_RULE,
                  "Changed": bool(used != handedness)}
