"""Do other settings of the boosted trees hold better on families they never saw?
(issue 11; an experiment, nothing here is shipped)

Each variant changes one thing in the shipped recipe
(:func:`cmbprep.testing.detector_training.train_model`: fitted without the benchmark's
held-out family, Platt-calibrated and thresholded on the validation scans) and reports
what the shipped model's file reports: leave-one-family-out F1 for A-F and their mean,
all scans of the held-out family D and of the test families G and H (direct mode, the
phantom's brain mask). The project decides on the leave-one-family-out mean plus G and H,
never on D alone.

Variants (``--variants``; default all):

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

VARIANTS = ("regularised", "feature_subsampling", "physics_monotone", "bagged3",
            "acquisition")


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


def run_variant(name, data, cache):
    """Fit one variant with the shipped recipe; the module settings are restored after."""
    saved = (dict(dt.TREE_PARAMETERS), dt._fit_part, classifier.FEATURES,
             classifier.model_frame.__defaults__)
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
            classifier.FEATURES = tuple(saved[2]) + ACQUISITION_FEATURES
            classifier.model_frame.__defaults__ = (classifier.FEATURES,)
            data = {k: (add_acquisition_features(c, cache), t) for k, (c, t) in data.items()}
        model = dt.train_model(data["train"], data["validation"], hold_out=dt.HELD_OUT_FAMILY)
    finally:
        dt.TREE_PARAMETERS.clear()
        dt.TREE_PARAMETERS.update(saved[0])
        dt._fit_part, classifier.FEATURES = saved[1], saved[2]
        classifier.model_frame.__defaults__ = saved[3]
    lofo = {f: m["all"]["f1"] for f, m in sorted(model["leave_one_family_out"].items())}
    test = model["test_families"]
    return {"lofo_f1": lofo, "lofo_mean_f1": float(np.mean(list(lofo.values()))),
            "G": test["G"]["measured"]["all"], "H": test["H"]["measured"]["all"],
            "D": model["held_out"]["measured"]["all"],
            "validation": model["validation"]["measured"]["all"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    data = {c: dt.collect(dt.scan_list(c), args.cache) for c in ("train", "validation")}
    results = {}
    for name in args.variants:
        t0 = time.perf_counter()
        results[name] = run_variant(name, data, args.cache)
        r = results[name]
        print(f"{name}: leave-one-family-out mean F1 {r['lofo_mean_f1']:.3f} ("
              + " ".join(f"{f} {v:.3f}" for f, v in r["lofo_f1"].items())
              + f"); G {r['G']['f1']:.3f}, H {r['H']['f1']:.3f}, D {r['D']['f1']:.3f} "
              f"(FP/scan {r['D']['fp_per_scan']:.2f}); {time.perf_counter() - t0:.0f} s",
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
