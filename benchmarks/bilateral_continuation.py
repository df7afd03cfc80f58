"""Does the dark structure continue on *both* sides of a candidate, near and far, even
with gaps? (issue 11; an experiment, nothing here is shipped)

The shipped continuation features (:mod:`cmbprep.algorithms.detection.context`) follow
dark *runs* from the centre: a ray counts only while every sample from the centre on is
darker than a quarter of the lesion's depth. A vein whose calibre or contrast varies (a
bead on a near-invisible stretch, a vein broken by noise or by thick slices) stops the run
at its first gap, and a vein seen end-on in one slice looks closed. This module measures
the darkness along each side of 128 antipodal ray pairs over two distance bands, without
asking that the dark samples be connected:

- ``bilateral_near``: max over the pairs of the smaller of the two sides' mean darkness
  from ``R + 0.5`` to ``R + 2`` mm (R: the lesion radius, at most 4 mm);
- ``bilateral_far``: the same from ``R + 2.5`` to ``R + 5`` mm;
- ``unilateral_far``: max over the 256 directions of one side's mean darkness in the far
  band (something dark beside the candidate, on one side only).

Darkness is ``(background - value) / (background - darkest)`` on the relative intensity
resampled on the detector's 0.5 mm isotropic grid and smoothed by 0.5 mm, clipped to
[0, 1.5]; ``background`` is the median of the cube, ``darkest`` the smoothed minimum within
the lesion radius. A vessel through the candidate is dark on both sides near and far; a
sphere's blooming lobes along B0 fade within a radius or two (near, not far); a vein
passing beside a sphere is dark on one side only.

Features are computed for every non-screened candidate of the training cache (from the
cached SWI/magnitude/phase, with the detector's own relative-intensity image,
:func:`cmbprep.algorithms.detection.cmbprep_detector.find_candidates`) and written beside
the candidate tables as ``bilateral_<family>_<seed>.csv`` in ``--out``;
``benchmarks/classifier_settings.py --variants bilateral_continuation --extra DIR`` fits
with them. The same three are measured on the detector's relative magnitude (the
bias-corrected magnitude, no phase mask; columns ``mag_bilateral_near`` ...; variant
``bilateral_magnitude``): the SWI's phase mask gives a microbleed dark lobes along B0,
the magnitude does not. ``--auc`` prints each feature's ROC AUC for microbleeds
against candidates on no lesion, per family.

Usage::

    python benchmarks/bilateral_continuation.py --cache /work/train/cache --out DIR --jobs 2
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.detection import context as ctx
from cmbprep.testing import detector_training as dt

#: Columns this experiment adds.
BILATERAL_FEATURES = ("bilateral_near", "bilateral_far", "unilateral_far")
#: Columns written: the features on the SWI, then on the magnitude.
ALL_COLUMNS = (*BILATERAL_FEATURES, *(f"mag_{n}" for n in BILATERAL_FEATURES))

NEAR_BAND_MM = (0.5, 2.0)  # beyond the lesion radius
FAR_BAND_MM = (2.5, 5.0)
MAX_DARKNESS = 1.5


def _band_darkness(smooth, n, directions, radius_mm, band, background, depth):
    """Mean darkness along each direction over ``radius + band`` (mm)."""
    t = np.arange(radius_mm + band[0], radius_mm + band[1] + 1e-6, ctx.RAY_STEP_MM)
    pts = n + directions[:, :, None] * (t[None, None, :] / ctx.GRID_MM)
    vals = ndi.map_coordinates(smooth, pts.transpose(1, 0, 2).reshape(3, -1), order=1,
                               mode="nearest").reshape(len(directions), len(t))
    dark = np.clip((background - vals) / depth, 0.0, MAX_DARKNESS)
    return dark.mean(axis=1)


def bilateral_continuation(image, center_vox, radius_mm, voxel_size):
    """:data:`BILATERAL_FEATURES` of one candidate (module docstring).

    Parameters
    ----------
    image : ndarray
        Relative intensity (tissue about 1).
    center_vox : sequence of 3 float
        Lesion centroid in voxel coordinates of ``image``.
    radius_mm : float
        Lesion radius (mm); capped at 4 mm, 1 mm when unknown.
    voxel_size : sequence of 3 float
        mm.
    """
    voxel_size = np.asarray(voxel_size, float)
    radius = float(np.clip(radius_mm, 0.0, ctx.MAX_RADIUS_MM)) if np.isfinite(radius_mm) \
        else 1.0
    half = radius + FAR_BAND_MM[1] + 0.5
    cube, n = ctx._iso_cube(image, center_vox, voxel_size, half)
    smooth = ndi.gaussian_filter(cube, ctx.SMOOTH_MM / ctx.GRID_MM, mode="nearest",
                                 truncate=3.0)
    axis = (np.arange(smooth.shape[0]) - n) * ctx.GRID_MM
    m = max(int(np.ceil(radius / ctx.GRID_MM)), 1)
    sub = axis[n - m:n + m + 1]
    d2 = sub[:, None, None] ** 2 + sub[None, :, None] ** 2 + sub[None, None, :] ** 2
    near = smooth[n - m:n + m + 1, n - m:n + m + 1, n - m:n + m + 1]
    darkest = float(near[d2 <= max(radius, ctx.GRID_MM) ** 2].min())
    background = float(np.median(smooth))
    depth = background - darkest
    if not depth >= ctx.MIN_DEPTH:
        return dict.fromkeys(BILATERAL_FEATURES, 0.0)
    dirs = ctx._DIRECTIONS
    n_pairs = len(dirs) // 2
    out = {}
    for name, band in (("near", NEAR_BAND_MM), ("far", FAR_BAND_MM)):
        side = _band_darkness(smooth, n, dirs, radius, band, background, depth)
        out[f"bilateral_{name}"] = float(np.minimum(side[:n_pairs], side[n_pairs:]).max())
        if name == "far":
            out["unilateral_far"] = float(side.max())
    return out


def candidate_centres(spec, cache):
    """The non-screened candidates of one cached scan, the detector's context (its
    relative SWI and magnitude) and each candidate's centroid in the context's voxels.

    Returns
    -------
    sub : DataFrame
        The non-screened rows of the scan's candidate table.
    context : CandidateContext
        :func:`cmbprep.algorithms.detection.cmbprep_detector.find_candidates`'s output.
    centres : (N, 3) ndarray
        Centroids in voxel coordinates of ``context.relative``.
    """
    from cmbprep.algorithms.detection.cmbprep_detector import find_candidates

    cand = pd.read_csv(Path(cache) / f"cand_{dt._tag(spec)}.csv", low_memory=False)
    keep = ~cand["screened_out"].astype(str).str.lower().isin(["true", "1"])
    arrays, _, _ = dt.prepare_scan(spec, cache)
    context = find_candidates(arrays["swi"], arrays["brain"], arrays["affine"],
                              filtered_phase=arrays["phase"],
                              magnitude=arrays.get("magnitude"),
                              parameters=dt.detector_parameters(arrays, scorer="rules"))
    start = np.array([b.start for b in context.box], float)
    # the table's i j k are rounded; its world position is the centroid itself
    sub = cand[keep]
    world = np.c_[sub[["x", "y", "z"]].to_numpy(float), np.ones(len(sub))]
    centres = (np.linalg.inv(arrays["affine"]) @ world.T)[:3].T - start
    return sub, context, centres


def scan_features(spec, cache):
    """:data:`BILATERAL_FEATURES` of every non-screened candidate of one cached scan, on
    the detector's relative SWI and (columns prefixed ``mag_``, NaN without magnitude) on
    its relative magnitude."""
    sub, context, centres = candidate_centres(spec, cache)
    rows = []
    for cid, diameter, centre in zip(sub["candidate_id"], sub["diameter_mm"], centres):
        row = {"candidate_id": cid}
        for prefix, image in (("", context.relative), ("mag_", context.magnitude_relative)):
            values = (dict.fromkeys(BILATERAL_FEATURES, np.nan) if image is None else
                      bilateral_continuation(image, centre, float(diameter) / 2,
                                             context.voxel_size))
            row.update({prefix + k: v for k, v in values.items()})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["candidate_id", *ALL_COLUMNS])
    return table.assign(family=spec.family, seed=spec.seed)


def _job(args):
    features, prefix, spec, cache, out = args
    path = Path(out) / f"{prefix}_{dt._tag(spec)}.csv"
    if path.exists():
        return str(path)
    t0 = time.perf_counter()
    table = features(spec, cache)
    tmp = path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    print(f"{dt._tag(spec)}: {len(table)} candidates, {time.perf_counter() - t0:.1f} s",
          flush=True)
    return str(path)


def write_per_scan(features, prefix, cache, out, jobs=1):
    """``features(spec, cache)`` of every train and validation scan of the cache, each
    written atomically as ``<out>/<prefix>_<family>_<seed>.csv`` (existing files kept)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    specs = [s for c in ("train", "validation") for s in dt.scan_list(c)]
    todo = [(features, prefix, s, cache, out) for s in specs]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_job, todo))
    else:
        [_job(t) for t in todo]


def read_per_scan(cand, extra_dir, prefix):
    """``cand`` with the columns of :func:`write_per_scan`'s ``<prefix>_*.csv`` files in
    ``extra_dir`` merged on family, seed and candidate (NaN where screened)."""
    tables = [pd.read_csv(p) for p in sorted(Path(extra_dir).glob(f"{prefix}_*.csv"))]
    if not tables:
        raise RuntimeError(f"{extra_dir}: no {prefix}_*.csv")
    extra = pd.concat(tables, ignore_index=True)
    merged = cand.merge(extra, on=["family", "seed", "candidate_id"], how="left",
                        validate="many_to_one")
    if len(merged) != len(cand):
        raise RuntimeError(f"{extra_dir}: candidate ids repeated")
    return merged


def add_bilateral_features(cand, extra_dir):
    """``cand`` with :data:`ALL_COLUMNS` read from ``extra_dir`` (NaN where screened)."""
    return read_per_scan(cand, extra_dir, "bilateral")


def roc_auc(pos, neg):
    """ROC AUC of positives against negatives (non-finite values left out; NaN when
    either side is empty)."""
    from sklearn.metrics import roc_auc_score

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return np.nan
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def feature_script_main(argv, description, features, prefix, add, names, title):
    """Command line of a per-candidate feature script: ``--cache``, ``--out``, ``--jobs``
    (:func:`write_per_scan` of ``features`` as ``<prefix>_*.csv``) and ``--auc`` (ROC
    AUC of ``names`` per family, microbleeds against candidates on no lesion, after
    ``add(cand, out)``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--auc", action="store_true")
    args = parser.parse_args(argv)
    write_per_scan(features, prefix, args.cache, args.out, args.jobs)
    if args.auc:
        data = [dt.collect(dt.scan_list(c), args.cache)[0] for c in ("train", "validation")]
        cand = add(pd.concat(data, ignore_index=True), args.out)
        cand = cand[~cand["screened_out"]]
        width = max(22, max(len(n) for n in names) + 2)
        print(title)
        print("family " + " ".join(f"{n:>{width}}" for n in names))
        for family, g in cand.groupby("family"):
            cmb, none = g[g["truth"] == "cmb"], g[g["truth"] == "none"]
            print(f"{family:6} " + " ".join(f"{roc_auc(cmb[n], none[n]):{width}.3f}"
                                             for n in names))
    return 0


def main(argv=None):
    return feature_script_main(
        argv, __doc__.splitlines()[0], scan_features, "bilateral", add_bilateral_features,
        (*ALL_COLUMNS, "continuation_fraction", "tube_length_mm"),
        "ROC AUC, microbleeds against candidates on no lesion (low value = microbleeds "
        "lower)")


if __name__ == "__main__":
    raise SystemExit(main())
