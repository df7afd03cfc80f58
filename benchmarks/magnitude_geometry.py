"""Does the dark geometry around a candidate read better on the magnitude than on the SWI?
(issue 11; an experiment, nothing here is shipped)

The shipped context features that describe dark geometry
(:mod:`cmbprep.algorithms.detection.context`: ``continuation_fraction``,
``continuation_axiality``, ``tube_length_mm``, ``vesselness_max_shell``,
``blob_vs_vessel``) are measured on the detector's relative SWI. The SWI multiplies the
magnitude by a phase mask: a microbleed's dipole field makes the phase paramagnetic in two
lobes along B0 and the mask darkens them, so on the SWI a sphere looks like a short dark
piece along B0 and can read like a vein crossing the candidate. The relative magnitude
(bias-corrected, no phase mask) shows the microbleed only by its T2* blooming, round,
while a vein piece along B0 stays dark on both images. This module measures the same five
features, with the shipped functions unchanged, on ``context.magnitude_relative``:

- the cube is built as :func:`cmbprep.algorithms.detection.context.context_features`
  builds it (0.5 mm isotropic resampling of half-width ``max(R + 5, 5.5)`` mm, 0.5 mm
  Gaussian smoothing; R the lesion radius, half the equal-volume diameter, in [0, 4] mm,
  1 mm when unknown);
- :func:`~cmbprep.algorithms.detection.context.vesselness_features` gives
  ``vesselness_max_shell``, ``blob_vs_vessel`` and the Hessian tube axis;
- :func:`~cmbprep.algorithms.detection.context.continuation_features` at a quarter depth
  gives ``continuation_fraction``, ``continuation_axiality`` and ``tube_length_mm``, with
  the median of the smoothed magnitude cube as background (the SWI segmentation's
  background does not apply to the magnitude).

Columns are prefixed ``mag_`` (:data:`MAG_CONTEXT_FEATURES`), NaN on scans without
magnitude. Features are computed for every non-screened candidate of the train and
validation scans of the training cache (from the cached SWI/magnitude/phase, with the
detector's own relative images,
:func:`cmbprep.algorithms.detection.cmbprep_detector.find_candidates`) and written as
``magctx_<family>_<seed>.csv`` in ``--out`` (the directory may also hold
``benchmarks/bilateral_continuation.py``'s files; the names do not clash);
``benchmarks/classifier_settings.py --variants magnitude_context --extra DIR`` fits with
them. ``--auc`` prints each feature's ROC AUC for microbleeds against candidates on no
lesion, per family, beside the shipped SWI versions.

Usage::

    python benchmarks/magnitude_geometry.py --cache /work/train/cache --out DIR --jobs 2 --auc
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from bilateral_continuation import candidate_centres, feature_script_main, read_per_scan
from cmbprep.algorithms.detection import context as ctx

#: The shipped context features measured here on the magnitude (unprefixed names).
GEOMETRY_FEATURES = ("continuation_fraction", "continuation_axiality", "tube_length_mm",
                     "vesselness_max_shell", "blob_vs_vessel")
#: Columns this experiment adds.
MAG_CONTEXT_FEATURES = tuple(f"mag_{n}" for n in GEOMETRY_FEATURES)

DEPTH_FRACTION = 0.25  # the detector's ``shallow_fraction``


def magnitude_geometry(image, center_vox, radius_mm, voxel_size):
    """:data:`GEOMETRY_FEATURES` of one candidate on ``image`` (module docstring).

    Parameters
    ----------
    image : ndarray
        Relative magnitude (tissue about 1).
    center_vox : sequence of 3 float
        Lesion centroid in voxel coordinates of ``image``.
    radius_mm : float
        Lesion radius (mm); clipped to [0, 4] mm, 1 mm when not finite.
    voxel_size : sequence of 3 float
        mm.

    Returns
    -------
    dict
        The :data:`GEOMETRY_FEATURES` (unprefixed).
    """
    voxel_size = np.asarray(voxel_size, float)
    radius = float(np.clip(radius_mm, 0.0, ctx.MAX_RADIUS_MM)) if np.isfinite(radius_mm) \
        else 1.0
    half = max(radius + ctx.SHELL_MM[1] + 1.0, ctx.TUBE_SIDE_MM + 0.5)
    cube, n = ctx._iso_cube(image, center_vox, voxel_size, half)
    smooth = ndi.gaussian_filter(cube, ctx.SMOOTH_MM / ctx.GRID_MM, mode="nearest",
                                 truncate=3.0)
    background = float(np.median(smooth))
    vessel, hess_axis = ctx.vesselness_features(smooth, n, radius)
    cont, _, _ = ctx.continuation_features(smooth, n, radius, background, DEPTH_FRACTION,
                                           hess_axis)
    return {name: float({**cont, **vessel}[name]) for name in GEOMETRY_FEATURES}


def scan_features(spec, cache):
    """:data:`MAG_CONTEXT_FEATURES` of every non-screened candidate of one cached scan
    (NaN without magnitude).

    Parameters
    ----------
    spec : ScanSpec
        One scan of :func:`cmbprep.testing.detector_training.scan_list`.
    cache : str or Path
        Training cache (candidate tables and cached images).

    Returns
    -------
    DataFrame
        ``candidate_id``, the :data:`MAG_CONTEXT_FEATURES`, ``family`` and ``seed``.
    """
    sub, context, centres = candidate_centres(spec, cache)
    image = context.magnitude_relative
    rows = []
    for cid, diameter, centre in zip(sub["candidate_id"], sub["diameter_mm"], centres):
        values = (dict.fromkeys(GEOMETRY_FEATURES, np.nan) if image is None else
                  magnitude_geometry(image, centre, float(diameter) / 2, context.voxel_size))
        rows.append({"candidate_id": cid, **{f"mag_{k}": v for k, v in values.items()}})
    table = pd.DataFrame(rows, columns=["candidate_id", *MAG_CONTEXT_FEATURES])
    return table.assign(family=spec.family, seed=spec.seed)


def add_magnitude_geometry(cand, extra_dir):
    """``cand`` with :data:`MAG_CONTEXT_FEATURES` read from ``extra_dir``
    (``magctx_*.csv``; NaN where screened), rows in the same order."""
    return read_per_scan(cand, extra_dir, "magctx")


def main(argv=None):
    return feature_script_main(
        argv, __doc__.splitlines()[0], scan_features, "magctx", add_magnitude_geometry,
        [n for pair in zip(MAG_CONTEXT_FEATURES, GEOMETRY_FEATURES) for n in pair
         if n != "continuation_axiality"],
        "ROC AUC, microbleeds against candidates on no lesion (low value = microbleeds "
        "lower); mag_ on the magnitude, beside the shipped SWI ones")


if __name__ == "__main__":
    raise SystemExit(main())
