"""Reading and checking the user's SWI inputs: echoes from NIfTI files, the plausibility
of a phase image, and the checks run before any processing (:func:`check_swi_inputs`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError

__all__ = ["INPUT_KINDS", "check_swi_inputs", "load_echoes", "looks_like_phase"]

#: the kinds of input the SWI chain accepts
INPUT_KINDS = ("gre", "megre", "swi", "magnitude")


def load_echoes(paths):
    """Load one NIfTI per echo (or a single 4D file) as an (X, Y, Z, E) float32 array.

    Parameters
    ----------
    paths : str, Path or list of them
        One 3D file per echo, or a single 3D/4D file.

    Returns
    -------
    data : numpy.ndarray, float32, shape (X, Y, Z, E)
        Stored echo-major (each echo contiguous, see :mod:`.layout`).
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
    if input_kind not in INPUT_KINDS:
        raise DataError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    magnitude, phase = _path_list(magnitude), _path_list(phase)
    mag, mag_affine, _ = load_echoes(magnitude)
    first = magnitude[0]
    msgs = _check_magnitude(mag, magnitude)
    _check_echo_count(mag.shape[3], input_kind, first, has_phase=bool(phase))
    if phase and input_kind in ("swi", "magnitude"):
        msgs.append(f"{first}: phase ignored for input_kind {input_kind!r}")
        phase = []
    if phase:
        _check_phase(phase, phase_units, mag.shape, mag_affine, first)
    msgs += _check_echo_times(echo_times, mag.shape[3], input_kind, first,
                              has_phase=bool(phase))
    return msgs


def _path_list(paths):
    """One path or a list of paths (or None) as a list of str."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [str(p) for p in (paths or [])]


def _check_magnitude(mag, names):
    """Each echo finite somewhere, not all zero, not negative; warnings for non-finite
    voxels."""
    msgs = []
    for e in range(mag.shape[3]):
        name = names[min(e, len(names) - 1)]
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
    return msgs


def _check_echo_count(n_echoes, input_kind, first, *, has_phase):
    """The number of echoes (and the presence of phase) the input kind needs."""
    if input_kind == "gre" and n_echoes != 1:
        raise DataError(f"{first}: input_kind 'gre' expects one echo, found {n_echoes}")
    if input_kind == "megre" and n_echoes < 2:
        raise DataError(f"{first}: input_kind 'megre' expects several echoes, found "
                        f"{n_echoes}")
    if input_kind in ("swi", "magnitude") and n_echoes != 1:
        raise DataError(f"{first}: input_kind {input_kind!r} expects one 3D image, found "
                        f"{n_echoes} volumes")
    if input_kind == "gre" and not has_phase:
        raise DataError(f"{first}: input_kind 'gre' needs a phase image, none given")


def _check_phase(phase, phase_units, mag_shape, mag_affine, first):
    """Phase on the magnitude's grid, finite somewhere, not all zero, phase-like."""
    ph, ph_affine, _ = load_echoes(phase)
    if ph.shape != mag_shape:
        raise DataError(f"{phase[0]}: phase shape {ph.shape[:3]} x {ph.shape[3]} echoes "
                        f"differs from magnitude {first} {mag_shape[:3]} x {mag_shape[3]}")
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


def _check_echo_times(echo_times, n_echoes, input_kind, first, *, has_phase):
    """One plausible, distinct EchoTime (s) per echo where the phase needs them."""
    if echo_times is not None:
        echo_times = [float(t) if t is not None else None for t in echo_times]
    need_te = has_phase and n_echoes > 1
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
        return [f"{first}: EchoTime missing; single-echo SWI does not need it "
                "(recorded as n/a)"]
    return []
