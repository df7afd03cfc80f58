"""Do other settings of the classifier's recipe hold better on families they never saw?
(issue 11; an experiment, nothing here is shipped)

Each variant changes one thing in the shipped recipe
(:func:`cmbprep.testing.detector_training.train_model`: fitted without the benchmark's
held-out family, Platt-calibrated and thresholded on the validation scans) and reports
what the shipped model's file reports: leave-one-family-out F1 for A-F and their mean,
all scans of the held-out family D and of the test families G and H (direct mode, the
phantom's brain mask). The project decides on the leave-one-family-out mean plus G and H,
never on D alone.

Every variant also reports, per left-out family, the sensitivity at 0.5, 1 and 2 false
positives per scan (``lofo_matched_fp``; :func:`cmbprep.testing.detector_training.
matched_fp_measures`): how it ranks that family's candidates, apart from where its
threshold lands.

Variants (``--variants``; default all):

``shipped``
    The shipped recipe unchanged (the baseline of the matched-rate figures).
``regularised``
    ``min_samples_leaf`` 100 (shipped 20), ``l2_regularization`` 10 (shipped 1).
``feature_subsampling``
    ``max_features`` 0.5: each split sees a random half of the features.
``physics_monotone``
    Monotone constraints where physics fixes the direction: the score may only rise with
    ``paramagnetic_evidence``, ``dipole_amplitude_snr`` and ``dipole_vs_cylinder``, and
    only fall with ``cylinder_fit_r2``, ``continuation_fraction``, ``tube_length_mm``,
    ``surrounding_dark_fraction``, ``attached_depth_ratio``, ``vesselness_max_shell``
    and ``elongation_perp_b0`` (:data:`MONOTONE`).
``bagged3``
    Three fits on bootstrap samples of whole scans (seeds 1000-1002), averaged (the trees
    of the three are concatenated with their leaf values divided by three, so the model
    file format and the detector's scoring do not change).
``acquisition``
    Two more inputs per candidate: the voxel's extent along B0 and its mean extent across
    B0 (mm, from the affine), so that the trees can read a shape against the sampling
    that made it (a small sphere in 3 mm slices looks long along B0).
``scan_rank``
    Three more inputs per candidate: its percentile, among the non-screened candidates
    of its own scan, of ``contrast``, ``magnitude_contrast`` and ``blobness``
    (:data:`RANK_FEATURES`), so that a candidate is read against the scan's own veins
    (a protocol that makes every vein dark and round moves them all).
``cross_family_calibration``
    The trees as shipped, but the Platt map and the accept thresholds are chosen on
    *out-of-family* scores of the validation candidates: each family's validation
    candidates are scored by trees fitted without that family (one more fit per
    family), so that the operating point is set on families the trees did not see, as
    the held-out family will be. Six to seven times the fits of the others.
``without_shape``, ``without_surroundings``, ``without_vesselness``, ``without_phase_fits``,
``without_contrast``, ``without_edge``
    One group of :data:`FEATURE_GROUPS` left out of both parts' inputs: which groups
    carry the ranking of families the trees never saw (read at matched false-positive
    rates), and which only help the families they learned from. ``edge`` is
    ``distance_to_edge_mm`` alone: the phantom places almost no microbleed within 3 mm
    of the brain edge, where juxtacortical microbleeds lie in real brains.
``bilateral_continuation``
    Three more inputs per candidate from ``benchmarks/bilateral_continuation.py`` (run it
    first; its ``--out`` directory is passed here as ``--extra``): the darkness on both
    sides of the candidate near (R + 0.5 to R + 2 mm) and far (R + 2.5 to R + 5 mm), gaps
    allowed, and on one side far; whether a dark structure continues through the
    candidate beyond the shipped continuation's connected dark runs.
``bilateral_magnitude``
    The same three measured on the detector's relative magnitude (the ``mag_`` columns of
    ``bilateral_continuation.py``'s output, passed as ``--extra``), hidden on the
    training scans where ``magnitude_contrast`` is: the SWI's phase mask gives a
    microbleed dark lobes along B0 that read like a vein piece, the magnitude does not.
``magnitude_context``
    Five more inputs per candidate from ``benchmarks/magnitude_geometry.py`` (run it
    first; its ``--out`` directory is passed here as ``--extra``): the shipped context
    features that describe dark geometry (``continuation_fraction``,
    ``continuation_axiality``, ``tube_length_mm``, ``vesselness_max_shell``,
    ``blob_vs_vessel``) measured with the shipped functions on the detector's relative
    magnitude (columns prefixed ``mag_``), hidden on the training scans where
    ``magnitude_contrast`` is: a microbleed has no phase-mask lobes along B0 there, a
    vein piece along B0 stays dark.
``magnitude_geometry``
    ``magnitude_context``'s five plus ``bilateral_magnitude``'s three (the ``--extra``
    directory holds both scripts' files), hidden on the same scans.
``worst_family_threshold``
    The trees and Platt map as shipped; the accept threshold maximises the *lowest*
    smoothed validation F1 of the seen families, each family's curve taken on its own
    validation scans (the pooled limits on false positives and calcifications as
    shipped), so that the easiest families cannot pull the threshold down.
``every_family_fp_threshold``
    As shipped (pooled smoothed F1), but the limit of 0.5 false positives per scan must
    hold on each seen family's validation scans, not only on their pool.

Reads the candidate tables of a training cache (``python -m
cmbprep.testing.detector_training --cache DIR --collect-only``; what is missing is
simulated and detected first). About 8 minutes per variant on one core (``bagged3``
three times that)::

    python benchmarks/classifier_settings.py --cache /work/train/cache9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cmbprep.algorithms.detection import classifier
from cmbprep.testing import detector_training as dt

#: Direction that physics fixes (+1: more microbleed-like as the feature rises).
MONOTONE = {"paramagnetic_evidence": 1, "dipole_amplitude_snr": 1, "dipole_vs_cylinder": 1,
            "cylinder_fit_r2": -1, "continuation_fraction": -1, "tube_length_mm": -1,
            "surrounding_dark_fraction": -1, "attached_depth_ratio": -1,
            "vesselness_max_shell": -1, "elongation_perp_b0": -1}

#: Scan-level inputs of the ``acquisition`` variant.
ACQUISITION_FEATURES = ("voxel_along_b0_mm", "voxel_across_b0_mm")

#: Features whose within-scan percentile the ``scan_rank`` variant adds.
RANK_FEATURES = ("contrast", "magnitude_contrast", "blobness")

#: Feature groups the ``without_<group>`` variants leave out.
FEATURE_GROUPS = {
    "shape": ("elongation", "elongation_perp_b0", "b0_aspect", "sphericity", "circularity",
              "centroid_shift_mm"),
    "surroundings": ("surrounding_dark_fraction", "attached_depth_ratio",
                     "continuation_fraction", "continuation_axiality", "tube_length_mm"),
    "vesselness": ("hessian_ratio", "vesselness_max_shell", "blob_vs_vessel", "blobness",
                   "scale_mm"),
    "phase_fits": tuple(classifier.PHASE_FEATURES),
    "contrast": ("contrast", "magnitude_contrast"),
    # the phantom puts almost no microbleed near the brain edge (docs/benchmarks.md)
    "edge": ("distance_to_edge_mm",),
}

VARIANTS = ("shipped", "regularised", "feature_subsampling", "physics_monotone", "bagged3",
            "acquisition", "scan_rank", "cross_family_calibration", "bilateral_continuation",
            "bilateral_magnitude", "magnitude_context", "magnitude_geometry",
            "worst_family_threshold", "every_family_fp_threshold",
            *(f"without_{g}" for g in FEATURE_GROUPS))


#: Variants whose inputs come from ``benchmarks/bilateral_continuation.py`` or
#: ``benchmarks/magnitude_geometry.py`` (``--extra``).
NEED_EXTRA = ("bilateral_continuation", "bilateral_magnitude", "magnitude_context",
              "magnitude_geometry")


def voxel_extent_along_and_across_b0(affine):
    """Extent (mm) of one voxel along scanner z (B0) and its mean along scanner x and y:
    the norms of the rows of the affine's 3 x 3 part."""
    rows = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=1))
    return float(rows[2]), float(rows[:2].mean())


def add_acquisition_features(cand, cache):
    """``cand`` with :data:`ACQUISITION_FEATURES` read from each scan's cached affine."""
    extent = {}
    for family, seed in set(zip(cand["family"], cand["seed"])):
        with np.load(Path(cache) / f"{family}_{seed}.npz") as d:
            extent[(family, seed)] = voxel_extent_along_and_across_b0(d["affine"])
    values = np.array([extent[k] for k in zip(cand["family"], cand["seed"])])
    return cand.assign(**{name: values[:, i] for i, name in enumerate(ACQUISITION_FEATURES)})


def add_scan_ranks(cand, names=RANK_FEATURES):
    """``cand`` with ``rank_<name>``: the percentile (0-1] of each candidate's ``name``
    among the non-screened candidates of its scan (NaN for screened ones)."""
    keep = ~cand["screened_out"].to_numpy(bool)
    scan = [cand["family"], cand["seed"]]
    return cand.assign(**{
        f"rank_{name}": pd.to_numeric(cand[name], errors="coerce").where(keep)
        .groupby(scan).rank(pct=True) for name in names})


def cross_family_fit(fit_part):
    """``fit_part`` whose part also carries ``out_of_family``: for each family of the
    training candidates, the trees fitted without it."""
    def fit(train, names, calcification_weight=1.0):
        part = fit_part(train, names, calcification_weight)
        part["out_of_family"] = {
            family: fit_part(train[train["family"] != family], names, calcification_weight)
            for family in sorted(train["family"].unique())}
        return part
    return fit


def out_of_family_scores(system_scores):
    """``system_scores`` that scores the candidates of a family named in a part's
    ``out_of_family`` with the trees fitted without that family (the part's own
    calibration applied); other candidates as before."""
    def scores(cand, model):
        score = system_scores(cand, model)
        screened = cand["screened_out"].to_numpy(bool)
        has_phase = cand["has_phase"].to_numpy(bool)
        for name in ("phase", "no_phase"):
            part = model.get(name, {})
            for family, sub in part.get("out_of_family", {}).items():
                sel = ((cand["family"] == family).to_numpy() & ~screened
                       & (has_phase == (name == "phase")))
                if sel.any():
                    sub = {**sub, "calibration": part.get("calibration")}
                    score[sel] = system_scores(cand[sel], {name: sub})
        return score
    return scores


def per_family_curves(va, val_truths, model, name):
    """The validation curve of part ``name`` (``dt._threshold_curve``) on the pool of
    ``va`` and on each family's validation candidates alone, scored once."""
    va = va.reset_index(drop=True)
    scores = dt.system_scores(va, model)
    pooled = dt._threshold_curve(va, val_truths, model, name, scores=scores)
    families = {}
    for family, rows in va.groupby("family").groups.items():
        rows = np.asarray(rows)
        families[family] = dt._threshold_curve(va.loc[rows], val_truths, model, name,
                                               scores=scores[rows])
    return pooled, families


def worst_family_threshold(va, val_truths, model, name):
    """``dt._choose_threshold`` whose objective is the lowest, over the seen families,
    of each family's smoothed validation F1 (pooled limits as shipped)."""
    pooled, families = per_family_curves(va, val_truths, model, name)
    smooth = lambda c: c["f1"].rolling(dt.F1_SMOOTHING_POINTS, center=True,  # noqa: E731
                                       min_periods=1).mean().to_numpy()
    worst = np.min([smooth(c) for c in families.values()], axis=0)
    # the pooled limits, then the worst family's F1 in place of the pooled one
    limited = pooled.assign(f1=worst)
    meets = limited[(limited["fp_per_scan"] <= dt.MAX_FP_PER_SCAN)
                    & (limited["calcifications_as_cmb"]
                       <= dt.calcification_limit(pooled, name))]
    pool = meets if len(meets) else limited
    row = pool[pool["f1"] == pool["f1"].max()].iloc[-1]
    return pooled, pooled.loc[row.name]


def every_family_fp_threshold(va, val_truths, model, name):
    """``dt._choose_threshold`` with the false-positive limit on every seen family's
    validation scans (the pooled F1 and calcification limit as shipped)."""
    pooled, families = per_family_curves(va, val_truths, model, name)
    worst_fp = np.max([c["fp_per_scan"].to_numpy() for c in families.values()], axis=0)
    return pooled, dt.choose_accept_threshold(pooled.assign(fp_per_scan=worst_fp),
                                              dt.MAX_FP_PER_SCAN,
                                              dt.calcification_limit(pooled, name))


def monotone_fit(fit_part):
    """``fit_part`` with the :data:`MONOTONE` constraints of its feature list."""
    def fit(train, names, calcification_weight=1.0):
        dt.TREE_PARAMETERS["monotonic_cst"] = [MONOTONE.get(n, 0) for n in names]
        return fit_part(train, names, calcification_weight)
    return fit


def bagged_fit(fit_part, n_bags=3):
    """``fit_part`` fitted on ``n_bags`` bootstrap samples of whole scans, averaged."""
    def fit(train, names, calcification_weight=1.0):
        scans = sorted(set(zip(train["family"], train["seed"])))
        row_scan = pd.MultiIndex.from_arrays([train["family"], train["seed"]])
        parts = []
        for bag in range(n_bags):
            pick = np.random.default_rng(1000 + bag).choice(len(scans), len(scans))
            copies = pd.Series(np.bincount(pick, minlength=len(scans)),
                               index=pd.MultiIndex.from_tuples(scans))
            sample = train.loc[train.index.repeat(copies.reindex(row_scan).to_numpy())]
            dt.TREE_PARAMETERS["random_state"] = bag
            parts.append(fit_part(sample, names, calcification_weight))
        out = dict(parts[0])
        out["baseline"] = float(np.mean([p["baseline"] for p in parts]))
        out["trees"] = [{**tree, "value": [v / n_bags for v in tree["value"]]}
                        for p in parts for tree in p["trees"]]
        return out
    return fit


def fit_and_measure(data, extra_features=(), measure=None, drop_features=()):
    """The shipped recipe (D held out, leave-one-family-out table) on ``data``, with the
    columns ``extra_features`` of its candidate tables as more inputs of both parts and
    without ``drop_features``; the feature list is restored after. Returns the figures
    the project decides on, and under ``"measured"`` what ``measure(model)`` returns
    (called while the extra features are still inputs, so that scoring reads them)."""
    saved = (classifier.FEATURES, classifier.model_frame.__defaults__)
    try:
        classifier.FEATURES = tuple(f for f in saved[0] if f not in drop_features) + tuple(
            extra_features)
        classifier.model_frame.__defaults__ = (classifier.FEATURES,)
        model = dt.train_model(data["train"], data["validation"], hold_out=dt.HELD_OUT_FAMILY,
                               matched_fp=True)
        measured = measure(model) if measure else None
    finally:
        classifier.FEATURES, classifier.model_frame.__defaults__ = saved
    lofo = {f: m["all"]["f1"] for f, m in sorted(model["leave_one_family_out"].items())}
    test = model["test_families"]
    matched = {f: m["matched_fp"] for f, m in sorted(model["leave_one_family_out"].items())}
    return {"lofo_f1": lofo, "lofo_mean_f1": float(np.mean(list(lofo.values()))),
            "lofo_matched_fp": matched,
            "G": test["G"]["measured"]["all"], "H": test["H"]["measured"]["all"],
            "D": model["held_out"]["measured"]["all"],
            "validation": model["validation"]["measured"]["all"], "measured": measured}


def _model_writer(path):
    """A ``measure`` for :func:`fit_and_measure` that writes the fitted model to ``path``."""
    from cmbprep.utils.io import write_text_atomic

    def write(model):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(model, separators=(",", ":")) + "\n")
        return str(path)

    return write


def run_variant(name, data, cache, extra_dir=None, model_out=None):
    """Fit one variant with the shipped recipe; the module settings are restored after.
    With ``model_out`` the variant's model file is written there too (as
    ``python -m cmbprep.testing.detector_training`` writes one; for
    ``--detector-model`` and ``benchmarks/real_background.py --model``)."""
    saved = (dict(dt.TREE_PARAMETERS), dt._fit_part, dt.system_scores, dt._choose_threshold,
             dt.MAGNITUDE_FEATURES)
    extra, drop = (), ()
    try:
        if name == "regularised":
            dt.TREE_PARAMETERS.update(min_samples_leaf=100, l2_regularization=10.0)
        elif name == "feature_subsampling":
            dt.TREE_PARAMETERS.update(max_features=0.5)
        elif name == "physics_monotone":
            dt._fit_part = monotone_fit(saved[1])
        elif name == "bagged3":
            dt._fit_part = bagged_fit(saved[1])
        elif name == "acquisition":
            extra = ACQUISITION_FEATURES
            data = {k: (add_acquisition_features(c, cache), t) for k, (c, t) in data.items()}
        elif name == "scan_rank":
            extra = tuple(f"rank_{n}" for n in RANK_FEATURES)
            data = {k: (add_scan_ranks(c), t) for k, (c, t) in data.items()}
        elif name in NEED_EXTRA:
            from bilateral_continuation import ALL_COLUMNS, BILATERAL_FEATURES, \
                add_bilateral_features
            from magnitude_geometry import MAG_CONTEXT_FEATURES, add_magnitude_geometry

            if extra_dir is None:
                raise SystemExit(f"{name} needs --extra DIR")
            mag_bilateral = tuple(f"mag_{n}" for n in BILATERAL_FEATURES)
            extra = {"bilateral_continuation": BILATERAL_FEATURES,
                     "bilateral_magnitude": mag_bilateral,
                     "magnitude_context": MAG_CONTEXT_FEATURES,
                     "magnitude_geometry": MAG_CONTEXT_FEATURES + mag_bilateral}[name]
            for columns, add in ((ALL_COLUMNS, add_bilateral_features),
                                 (MAG_CONTEXT_FEATURES, add_magnitude_geometry)):
                if set(extra) & set(columns):
                    data = {k: (add(c, extra_dir), t) for k, (c, t) in data.items()}
            if name != "bilateral_continuation":  # magnitude inputs: hidden on the same scans
                dt.MAGNITUDE_FEATURES = saved[4] + extra
        elif name == "cross_family_calibration":
            dt._fit_part = cross_family_fit(saved[1])
            dt.system_scores = out_of_family_scores(saved[2])
        elif name == "worst_family_threshold":
            dt._choose_threshold = worst_family_threshold
        elif name == "every_family_fp_threshold":
            dt._choose_threshold = every_family_fp_threshold
        elif name.startswith("without_"):
            drop = FEATURE_GROUPS[name.removeprefix("without_")]
        result = fit_and_measure(data, extra, drop_features=drop,
                                 measure=_model_writer(model_out) if model_out else None)
    finally:
        dt.TREE_PARAMETERS.clear()
        dt.TREE_PARAMETERS.update(saved[0])
        (dt._fit_part, dt.system_scores, dt._choose_threshold,
         dt.MAGNITUDE_FEATURES) = saved[1:]
    del result["measured"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="default: all (those that need --extra only with it)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--write-models", metavar="DIR",
                        help="also write each variant's model file, DIR/<variant>.json")
    parser.add_argument("--extra", help="output directory of benchmarks/"
                        "bilateral_continuation.py and/or magnitude_geometry.py")
    args = parser.parse_args(argv)
    if args.variants is None:
        args.variants = [v for v in VARIANTS if args.extra or v not in NEED_EXTRA]
    data = {c: dt.collect(dt.scan_list(c), args.cache) for c in ("train", "validation")}
    results = {}
    for name in args.variants:
        t0 = time.perf_counter()
        results[name] = run_variant(
            name, data, args.cache, args.extra,
            Path(args.write_models) / f"{name}.json" if args.write_models else None)
        r = results[name]
        print(f"{name}: leave-one-family-out mean F1 {r['lofo_mean_f1']:.3f} ("
              + " ".join(f"{f} {v:.3f}" for f, v in r["lofo_f1"].items())
              + f"); G {r['G']['f1']:.3f}, H {r['H']['f1']:.3f}, D {r['D']['f1']:.3f} "
              f"(FP/scan {r['D']['fp_per_scan']:.2f}); {time.perf_counter() - t0:.0f} s",
              flush=True)
        for rate in dt.MATCHED_FP_RATES:
            key = f"{rate:g}"
            print(f"  sensitivity at {key} FP/scan: " + " ".join(
                f"{f} {m[key]:.3f}" for f, m in r["lofo_matched_fp"].items()), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
