"""Train the candidate classifier of the ``cmbprep`` detector on randomised phantom families.

Only generated data is used. The training scans come from the generator *families* of
:mod:`cmbprep.testing.phantom.randomise` (each family its own vein model and its own
protocol ranges; noise, bias, artefacts, anatomy and input kind drawn per scan). The
shipped model never sees :data:`HELD_OUT_FAMILY` (``--hold-out D``), so the benchmark
can measure it on vessels and protocols it was not fitted, calibrated or thresholded
on; a leave-one-family-out table does the same for every family. The
:data:`TEST_FAMILIES` (G, H) are kept out of every fit, the leave-one-family-out fits
included, and only measured. Seed ranges are reserved so that no phantom is used twice:

=============  ===========  =========================================================
seeds          used by      purpose
=============  ===========  =========================================================
< 12000        tests        ``simulate_subject`` seeds < 100; ``write_bids_dataset``
                            seeds <= 11 (anatomy seeds ``seed * 1000 + subject``)
1001-1099      benchmark    ``benchmarks/detection.py`` (never seen by training)
20000-20999    training     fitting the trees (``20000 + 100 * family + k``)
30000-30999    validation   calibration and the ``accept``/``review`` thresholds
=============  ===========  =========================================================

Command line (writes ``cmbprep/data/models/cmbprep_classifier.json``)::

    python -m cmbprep.testing.detector_training --cache /tmp/cmbtrain --jobs 2 --hold-out D

Each scan is drawn (:func:`~cmbprep.testing.phantom.random_scan`), simulated, processed
into SWI with :func:`~cmbprep.algorithms.swi.process_swi` (one thread; scanner-SWI scans
enter as SWI without phase), and its candidates with all features are extracted by
:func:`~cmbprep.algorithms.detection.detect_cmbprep`; candidates are labelled with
:func:`~cmbprep.testing.scoring.label_detections` (``one_to_one=False``); candidates
matched to invisible microbleeds are left out. The classifier is a gradient-boosted tree
ensemble (scikit-learn, one thread, fixed ``random_state``) exported to JSON
(:mod:`cmbprep.algorithms.detection.classifier`), followed by a logistic (Platt)
calibration fitted on the validation scans, so that ``score`` is a probability. The run
also writes a leave-one-family-out table (each family scored by a model fitted and
calibrated without it) and the test families' measures into the model file. With
``--network`` the model also holds a patch network (:mod:`.network_training`) stacked with
the trees (version ``8+network``; measured, not the shipped model; version 7 was that
model on the training data before juxtacortical microbleeds: ``docs/detection.rst``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.io import python_sources_fingerprint, write_text_atomic

__all__ = ["COHORTS", "HELD_OUT_FAMILY", "MODEL_VERSION", "TEST_FAMILIES", "candidate_table",
           "detector_fingerprint", "detector_parameters", "evaluate_system", "fixed_scan",
           "main", "measure_test_families", "model_families", "phantom_fingerprint",
           "prepare_scan", "scan_list", "scan_statuses", "swi_fingerprint", "system_scores",
           "train_model", "trees_only"]

#: The family held out of the shipped model (fit, calibration and thresholds; ``--hold-out
#: D``): the benchmark's held-out figure is measured on it.
HELD_OUT_FAMILY = "D"

#: Families added after the shipped model was fixed and kept out of every fit: not in
#: its training, calibration or thresholds, nor in any leave-one-family-out fit. The
#: trainer measures the model on all their scans (``test_families`` in the model file), a
#: held-out figure on data nobody tuned anything to: family G, ``converging`` veins; family
#: H, ``lobulated`` lesions (with signal inside, closer to veins) among family D's veins.
TEST_FAMILIES = ("G", "H")

#: Scans per family in each cohort.
N_SCANS = {"train": 32, "validation": 16}
_FIRST_SEED = {"train": 20000, "validation": 30000}


def _families():
    from .phantom.randomise import FAMILIES

    return list(FAMILIES)


def _cohort_seeds(cohort):
    return {family: [_FIRST_SEED[cohort] + 100 * i + k for k in range(N_SCANS[cohort])]
            for i, family in enumerate(_families())}


#: Seeds of each cohort, by family.
COHORTS = {cohort: _cohort_seeds(cohort) for cohort in N_SCANS}


@dataclass(frozen=True)
class FixedScan:
    """A scan from a fixed protocol (benchmark and tests): same fields as a randomised
    :class:`~cmbprep.testing.phantom.randomise.ScanSpec` where the training needs them."""

    config: object
    input_kind: str
    family: str
    seed: int

    @property
    def sim_seed(self):
        """Seed of :func:`~cmbprep.testing.phantom.simulate_subject` (the scan's seed)."""
        return self.seed


def fixed_scan(protocol, overrides, seed, input_kind="gre"):
    """A scan of a :data:`~cmbprep.testing.phantom.PROTOCOLS` preset with overrides."""
    from .phantom import PhantomConfig

    return FixedScan(PhantomConfig.from_protocol(protocol, **overrides), input_kind,
                     protocol, int(seed))


def scan_list(cohort):
    """Scan descriptions (randomised, deterministic) of a cohort."""
    from .phantom.randomise import random_scan

    return [random_scan(family, seed) for family, seeds in COHORTS[cohort].items()
            for seed in seeds]


def _tag(spec):
    return f"{spec.family}_{spec.seed}"


def phantom_fingerprint():
    """SHA-256 prefix of the phantom generator's source: cached scans made by another
    version of the generator (same seeds, other lesions) are not reused."""
    from . import phantom

    return phantom.source_fingerprint()


def swi_fingerprint():
    """SHA-256 prefix of the SWI chain's source (:mod:`cmbprep.algorithms.swi`): cached
    SWIs made by another version of the chain (e.g. another echo combination) are not
    reused."""
    from ..algorithms import swi

    return swi.source_fingerprint()


def _scan_stamp():
    """Cache stamp of a prepared scan: the generator's and the SWI chain's sources."""
    return f"phantom {phantom_fingerprint()} swi {swi_fingerprint()}"


def detector_fingerprint():
    """SHA-256 prefix of the candidate detector's source (the modules of
    :mod:`cmbprep.algorithms.detection`): cached candidate tables made by another version
    of the detector (other features, other phase-sign rules) are not reused."""
    from ..algorithms import detection

    return python_sources_fingerprint(Path(detection.__file__).parent)


def prepare_scan(spec, cache_dir=None):
    """Simulate one scan and compute SWI, filtered phase and minIP (cached as npz).

    The SWI chain's steps 1-4 (:func:`~cmbprep.algorithms.swi.process_swi`); the
    pipeline's step 5 (the phase convention decided again inside the brain mask,
    :func:`~cmbprep.algorithms.swi.confirm_handedness_in_brain`) is not run, so that the
    shipped classifier stays reproducible (docs/swi.rst).

    Returns
    -------
    arrays : dict
        ``swi phase minip brain affine handedness magnitude`` (the phantom's brain mask;
        ``phase`` is ``None`` for scanner-SWI input; ``handedness`` is the SWI chain's
        detected phase convention, ``"n/a"`` without phase or in caches written before it
        was kept; ``magnitude`` is the chain's bias-corrected magnitude, which the
        detector reads in phase-mask artefact zones).
    truth : pandas.DataFrame
    timing : dict
    """
    from ..algorithms.mip import sliding_minip
    from ..algorithms.swi import process_swi
    from .phantom.randomise import simulate_scan

    tag = _tag(spec)
    if cache_dir:
        npz = Path(cache_dir) / f"{tag}.npz"
        csv = Path(cache_dir) / f"{tag}.csv"
        stamp = Path(cache_dir) / f"{tag}.phantom"
        fresh = stamp.exists() and stamp.read_text().strip() == _scan_stamp()
        # caches written before the bias-corrected magnitude was kept are redone: the
        # detector reads it in phase-mask artefact zones, as in the pipeline
        if fresh and npz.exists():
            with np.load(npz) as d:
                fresh = "magnitude" in d.files
        if npz.exists() and csv.exists() and fresh:
            d = np.load(npz)
            arrays = {k: d[k] for k in ("swi", "minip", "brain", "affine")}
            arrays["phase"] = d["phase"] if "phase" in d.files else None
            arrays["handedness"] = str(d["handedness"]) if "handedness" in d.files else "n/a"
            arrays["magnitude"] = d["magnitude"]
            return arrays, pd.read_csv(csv), {"simulate_s": np.nan, "swi_s": np.nan}
    t0 = time.perf_counter()
    sub = simulate_scan(spec)  # as the pipeline receives it (scanner SWI: no phase)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = process_swi(sub.magnitude, sub.phase, sub.affine, input_kind=sub.input_kind,
                      echo_times=list(sub.echo_times_s), phase_units="rad", n_threads=1)
    minip = sliding_minip(out["swi"], sub.affine)
    t_swi = time.perf_counter() - t0
    filtered = out.get("filtered_phase") if sub.phase is not None else None
    arrays = {"swi": out["swi"].astype(np.float32),
              "phase": None if filtered is None else filtered.astype(np.float32),
              "minip": minip.astype(np.float32), "brain": sub.brain_mask,
              "affine": sub.affine,
              "handedness": out["meta"].get("Handedness", "n/a") if filtered is not None
              else "n/a",
              "magnitude": out["magnitude"].astype(np.float32)}
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = Path(cache_dir) / f".{tag}.tmp.npz"
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
        os.replace(tmp, Path(cache_dir) / f"{tag}.npz")
        sub.truth.to_csv(Path(cache_dir) / f"{tag}.csv", index=False)
        (Path(cache_dir) / f"{tag}.phantom").write_text(_scan_stamp() + "\n")
    return arrays, sub.truth, {"simulate_s": t_sim, "swi_s": t_swi}


def detector_parameters(arrays, **overrides):
    """Detector parameters for :func:`prepare_scan` arrays: as in the pipeline, the SWI
    chain's detected handedness cross-checks the detector's own phase-sign calibration
    (``phase_sign_reference``)."""
    from ..algorithms.detection import PHASE_SIGN_OF_HANDEDNESS

    parameters = dict(overrides)
    if arrays.get("handedness") in PHASE_SIGN_OF_HANDEDNESS:
        parameters["phase_sign_reference"] = PHASE_SIGN_OF_HANDEDNESS[arrays["handedness"]]
    return parameters


def candidate_table(spec, cache_dir=None):
    """All candidates of one scan with their features and truth labels."""
    from ..algorithms.detection import detect_cmbprep
    from .scoring import label_detections

    arrays, truth, timing = prepare_scan(spec, cache_dir)
    t0 = time.perf_counter()
    # features do not depend on the scorer; "rules" needs no model file
    result = detect_cmbprep(arrays["swi"], arrays["brain"], arrays["affine"],
                            filtered_phase=arrays["phase"],
                            magnitude=arrays.get("magnitude"),
                            parameters=detector_parameters(arrays, scorer="rules"))
    timing["detect_s"] = time.perf_counter() - t0
    cand = result.candidates.copy()
    labels, which = label_detections(cand, truth, one_to_one=False)
    cand["truth"] = labels
    cand["truth_row"] = which
    cand["family"] = spec.family
    cand["seed"] = spec.seed
    cand["input_kind"] = spec.input_kind
    # phase features exist only when the detector used the phase (sign known, no conflict)
    cand["has_phase"] = bool(result.parameters.get("phase_used", False))
    return cand, truth, timing


def _candidates_job(args):
    spec, cache_dir = args
    out = Path(cache_dir) / f"cand_{_tag(spec)}.csv"
    stamp = Path(cache_dir) / f"cand_{_tag(spec)}.stamp"
    key = f"{_scan_stamp()} detector {detector_fingerprint()}"
    if out.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return str(out)
    cand, truth, timing = candidate_table(spec, cache_dir)
    write_text_atomic(out, cand.to_csv(index=False))
    write_text_atomic(stamp, key + "\n")
    print(f"{_tag(spec)} ({spec.input_kind}): {len(cand)} candidates, "
          f"{int((cand['truth'] == 'cmb').sum())} on visible CMBs; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()), flush=True)
    return str(out)


def _simulate_job(args):
    spec, cache_dir = args
    _, _, timing = prepare_scan(spec, cache_dir)
    if np.isfinite(timing["simulate_s"]):
        print(f"{_tag(spec)} ({spec.input_kind}): simulated in {timing['simulate_s']:.0f} s, "
              f"SWI {timing['swi_s']:.0f} s", flush=True)
    return _tag(spec)


def _run_jobs(job, specs, cache_dir, jobs):
    """``job((spec, cache_dir))`` for every scan, in ``jobs`` processes when > 1."""
    todo = [(spec, str(cache_dir)) for spec in specs]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            return list(pool.map(job, todo))
    return [job(t) for t in todo]


def simulate_all(specs, cache_dir, jobs=1):
    """Simulate and SWI-process scans into the cache (no candidates)."""
    return _run_jobs(_simulate_job, specs, cache_dir, jobs)


def collect(specs, cache_dir, jobs=1):
    """Candidate tables of scans (computed once, then read from ``cache_dir``).

    Returns
    -------
    candidates : pandas.DataFrame
    truths : dict
        ``(family, seed)`` -> truth table.
    """
    paths = _run_jobs(_candidates_job, specs, cache_dir, jobs)
    truths = {(spec.family, spec.seed): pd.read_csv(Path(cache_dir) / f"{_tag(spec)}.csv")
              for spec in specs}
    cand = pd.concat([pd.read_csv(path, low_memory=False) for path in paths],
                     ignore_index=True)
    cand["screened_out"] = cand["screened_out"].astype(str).str.lower().isin(["true", "1"])
    cand["has_phase"] = cand["has_phase"].astype(str).str.lower().isin(["true", "1"])
    return cand, truths


#: Settings of the boosted trees (scikit-learn ``HistGradientBoostingClassifier``).
TREE_PARAMETERS = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15,
                   "min_samples_leaf": 20, "l2_regularization": 1.0,
                   "early_stopping": False, "random_state": 0}

#: Training weight of candidates on calcifications (rare mimics that must be rejected).
CALCIFICATION_WEIGHT = 10.0

#: Targets (issue 5/11) the accept threshold must meet on the validation scans.
MAX_FP_PER_SCAN = 0.5
MIN_CALC_REJECTED = 0.9

#: Lowest calibrated probability shown to a rater (``review``): one chance in ten.
REVIEW_PROBABILITY = 0.10

#: How far a stacked patch network (``--network``) may move the trees' logit
#: (:func:`~cmbprep.algorithms.detection.network.stack_logit`; the odds by a factor of
#: e = 2.7 at most): of 0.25, 0.5 and 1, the one with the highest mean validation F1 over
#: the leave-one-family-out folds and two network seeds (docs/detection.rst).
NETWORK_MAX_LOGIT_SHIFT = 1.0

#: The validation F1 curve over thresholds is averaged over this many neighbouring grid
#: points (centred; about +-0.04) before its maximum is taken.
F1_SMOOTHING_POINTS = 5


def choose_accept_threshold(curve, max_fp_per_scan, max_calcifications=np.inf):
    """Row of ``curve`` (one per threshold, ascending, with ``threshold f1 fp_per_scan
    calcifications_as_cmb``) whose F1, averaged over ``F1_SMOOTHING_POINTS`` neighbouring
    thresholds, is highest among the thresholds that meet both limits (all thresholds
    when none does); ties go to the higher threshold.

    The validation F1 is flat over a wide range of thresholds (a plateau of +-0.01), and
    the raw maximum on such a plateau is set by a few validation lesions, so that a
    small change of the training data moves the threshold from one end of the plateau to
    the other. The averaged curve peaks where F1 stays high around the threshold.
    """
    curve = curve.sort_values("threshold").reset_index(drop=True)
    smoothed = curve["f1"].rolling(F1_SMOOTHING_POINTS, center=True, min_periods=1).mean()
    curve = curve.assign(f1_smoothed=smoothed)
    meets = curve[(curve["fp_per_scan"] <= max_fp_per_scan)
                  & (curve["calcifications_as_cmb"] <= max_calcifications)]
    pool = meets if len(meets) else curve
    return pool[pool["f1_smoothed"] == pool["f1_smoothed"].max()].iloc[-1]


def _usable(cand):
    return cand[~cand["screened_out"] & (cand["truth"] != "invisible_cmb")]


#: Every how many training scans (by seed) the magnitude is hidden from the trees
#: (``magnitude_contrast`` set to NaN), so that they learn what to do when a caller gives
#: no magnitude.
HIDE_MAGNITUDE_EVERY = 5


#: Inputs that come from the magnitude, hidden together by
#: :func:`_hide_magnitude_sometimes`.
MAGNITUDE_FEATURES = ("magnitude_contrast",)


def _hide_magnitude_sometimes(data):
    """``data`` with the :data:`MAGNITUDE_FEATURES` it has NaN on the scans whose seed is
    a multiple of :data:`HIDE_MAGNITUDE_EVERY` (deterministic)."""
    names = [n for n in MAGNITUDE_FEATURES if n in data]
    if not names:
        return data
    hide = (data["seed"].to_numpy(int) % HIDE_MAGNITUDE_EVERY) == 0
    return data.assign(**{n: np.where(hide, np.nan, pd.to_numeric(data[n], errors="coerce"))
                          for n in names})


def _fit_part(train, names, calcification_weight=1.0):
    """Fit one ensemble on the non-screened training candidates (one thread).

    Candidates on calcifications weigh ``calcification_weight``; every family weighs the
    same in total (families differ in candidate counts). The magnitude is hidden on one
    scan in :data:`HIDE_MAGNITUDE_EVERY` (:func:`_hide_magnitude_sometimes`).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from ..algorithms.detection.classifier import export_hist_gradient_boosting, model_frame

    data = _hide_magnitude_sometimes(_usable(train))
    y = (data["truth"] == "cmb").to_numpy(int)
    weight = np.where(data["truth"] == "calcification", calcification_weight, 1.0)
    per_family = data.groupby("family")["family"].transform("size").to_numpy(float)
    weight = weight * len(data) / (per_family * data["family"].nunique())
    with threadpool_limits(limits=1):
        est = HistGradientBoostingClassifier(**TREE_PARAMETERS).fit(
            model_frame(data, names).to_numpy(float), y, sample_weight=weight)
    part = export_hist_gradient_boosting(est, names)
    part.update({"n_candidates": int(len(y)), "n_positive": int(y.sum()),
                 "fitted_with": "scikit-learn HistGradientBoostingClassifier",
                 "parameters": dict(TREE_PARAMETERS)})
    return part


def trees_only(model):
    """The boosted trees of ``model`` alone, with their own calibration and thresholds
    (``trees_only``) when the model stacks them with a patch network; ``model`` itself
    otherwise. For comparisons with earlier, trees-only models."""
    from ..algorithms.detection.classifier import uses_network

    if not uses_network(model):
        return model
    out = {k: v for k, v in model.items() if k != "network"}
    for name in ("phase", "no_phase"):
        part = {k: v for k, v in model[name].items() if k not in ("stack", "trees_only")}
        accept = float(model[name]["trees_only"]["accept_score"])
        out[name] = {**part, "accept_score": accept,
                     "review_score": min(REVIEW_PROBABILITY, accept),
                     "validation": model[name]["trees_only"]["validation"]}
    return out


def _raw_scores(cand, part):
    """Uncalibrated probabilities of one part (0 for screened-out candidates)."""
    raw_part = {k: v for k, v in part.items() if k != "calibration"}
    return system_scores(cand.assign(has_phase=True), {"phase": raw_part})


def system_scores(cand, model):
    """Scores as the detector gives them: the ``phase`` part for candidates of scans with
    phase, ``no_phase`` for the others (0 for screened-out candidates); with the patch
    network's output (``NETWORK_COLUMN``) when the model has a network."""
    from ..algorithms.detection.classifier import (
        NETWORK_COLUMN,
        model_frame,
        predict_proba,
        uses_network,
    )

    score = np.zeros(len(cand))
    keep = ~cand["screened_out"].to_numpy(bool)
    has_phase = cand["has_phase"].to_numpy(bool)
    network = cand[NETWORK_COLUMN].to_numpy(float) if uses_network(model) else None
    for use_phase in (True, False):
        sel = keep & (has_phase == use_phase)
        if sel.any():
            score[sel] = predict_proba(model_frame(cand[sel]), model, use_phase=use_phase,
                                       network_probability=None if network is None
                                       else network[sel])
    return score


def _calibrate(cand, part):
    """Platt scaling: a logistic regression of the truth on the logit of the ensemble's
    output, fitted on ``cand`` (validation candidates). Two numbers, monotone, and stable
    with the few hundred positives a validation cohort has (an isotonic map fitted on the
    first cohort had wide steps)."""
    data = _usable(cand)
    raw = np.clip(_raw_scores(data, part), 1e-12, 1.0 - 1e-12)
    return _platt(np.log(raw / (1.0 - raw)), (data["truth"] == "cmb").to_numpy(int))


def _platt(logit, y):
    """Logistic calibration (``calibration`` entry) of ``logit`` to the labels ``y``."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one thread, as the trees: the same digits
        fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.asarray(logit)[:, None], y)
    return {"method": "logistic", "fitted_on": "validation candidates (Platt scaling)",
            "slope": float(fit.coef_[0, 0]), "intercept": float(fit.intercept_[0])}


def _calibrate_stack(cand, part):
    """Platt scaling of the stack's logit (:func:`~cmbprep.algorithms.detection.network.
    stack_logit` of the calibrated trees and the network, at most the ``stack`` entry's
    ``max_logit_shift`` apart), fitted on ``cand`` (validation candidates with the
    network's output)."""
    from ..algorithms.detection.classifier import NETWORK_COLUMN
    from ..algorithms.detection.network import stack_logit

    data = _usable(cand)
    trees = system_scores(data.assign(has_phase=True), {"phase": part})
    z = stack_logit(trees, data[NETWORK_COLUMN].to_numpy(float),
                    part["stack"]["max_logit_shift"])
    return _platt(z, (data["truth"] == "cmb").to_numpy(int))


def scan_statuses(cand, model, thresholds=None, scores=None):
    """Each scan's candidates with the status the detector gives them under ``model``:
    the ``phase`` part on scans with phase, ``no_phase`` on the others.

    Parameters
    ----------
    cand : DataFrame
        Candidate tables (``collect``).
    model : dict
        With ``phase`` and ``no_phase`` parts (calibrated, with thresholds).
    thresholds : dict, optional
        ``{"phase": t, "no_phase": t}`` accept thresholds overriding the model's.
    scores : ndarray, optional
        :func:`system_scores` of ``cand`` (computed when not given).

    Yields
    ------
    (family, seed), rows, DataFrame
        Per scan, in (family, seed) order: its key, the positions of its rows in ``cand``,
        and its candidates (index from 0) with a ``status`` column (``cmb``, ``review``,
        ...).
    """
    from ..algorithms.detection import CMBPREP_PARAMETERS, assign_status

    cand = cand.reset_index(drop=True)
    scores = system_scores(cand, model) if scores is None else np.asarray(scores)
    for key, rows in cand.groupby(["family", "seed"], sort=True).groups.items():
        rows = np.asarray(rows)
        c = cand.loc[rows].reset_index(drop=True)
        name = "phase" if bool(c["has_phase"].iloc[0]) else "no_phase"
        part = model[name]
        accept = part["accept_score"] if thresholds is None else thresholds[name]
        assign_status(c, scores[rows], ["n/a"] * len(c), accept,
                      min(part["review_score"], accept),
                      CMBPREP_PARAMETERS["max_accept_diameter_mm"])
        yield key, rows, c


def evaluate_system(cand, truths, model, thresholds=None, scores=None):
    """Measures of the two-part model as the detector uses it (:func:`scan_statuses`).

    Parameters
    ----------
    cand, model, thresholds, scores
        As for :func:`scan_statuses`.
    truths : dict
        ``(family, seed)`` -> truth table.

    Returns
    -------
    dict
        :func:`~cmbprep.testing.scoring.summarise` of all scans (``all``), of scans with
        phase (``phase``) and of scans without (``swi_only``), each with
        ``review_per_scan`` (mean candidates left for review) and ``n_scans``.
    """
    from .scoring import summarise

    groups = {"all": [], "phase": [], "swi_only": []}
    review = {"all": [], "phase": [], "swi_only": []}
    for key, _, c in scan_statuses(cand, model, thresholds, scores):
        use_phase = bool(c["has_phase"].iloc[0])
        kind = c["input_kind"].iloc[0]
        entry = {"truth": truths[key], "protocol": f"{key[0]}/{kind}",
                 "detections": c[c["status"] == "cmb"]}
        n_review = int((c["status"] == "review").sum())
        for name in ("all", "phase" if use_phase else "swi_only"):
            groups[name].append(entry)
            review[name].append(n_review)
    out = {}
    for name, per_scan in groups.items():
        if per_scan:
            out[name] = summarise(per_scan)
            out[name]["review_per_scan"] = float(np.mean(review[name]))
            out[name]["n_scans"] = len(per_scan)
    return out


#: Version written into a fitted model file (the trees; ``+network`` when stacked with the
#: patch network). 6 and 7 were fitted on the training data before the families drew
#: juxtacortical microbleeds (v6 is reproduced at commit 43e069f); 8 is the first after;
#: 9 the first after they also drew lesions beside veins (``beside_vein_share``).
MODEL_VERSION = "9"

#: Accept thresholds tried on the validation scans (calibrated probabilities).
THRESHOLD_GRID = np.round(np.concatenate([np.arange(0.05, 0.3, 0.025),
                                          np.arange(0.3, 0.96, 0.02)]), 4)


def _threshold_curve(cand, truths, model, name, grid=THRESHOLD_GRID, scores=None):
    """Validation measures of part ``name`` at each accept threshold of ``grid``, with
    ``scores`` (default: :func:`system_scores` of ``model``)."""
    if scores is None:
        scores = system_scores(cand.reset_index(drop=True), model)
    rows = []
    for t in grid:
        m = evaluate_system(cand, truths, model, {"phase": t, "no_phase": t}, scores)
        m = m["phase" if name == "phase" else "all"]
        rows.append({"threshold": float(t), "f1": m["visible"]["f1"],
                     "sensitivity": m["visible"]["sensitivity"],
                     "precision": m["visible"]["precision"], "fp_per_scan": m["fp_per_scan"],
                     "calcifications_as_cmb": m["calcifications_as_cmb"],
                     "calcifications": m["calcifications"],
                     "review_per_scan": m["review_per_scan"]})
    return pd.DataFrame(rows)


#: False positives per scan at which ``--matched-fp`` reads each left-out family's
#: sensitivity (the ranking, apart from where the threshold lands).
MATCHED_FP_RATES = (0.5, 1.0, 2.0)


def sensitivity_at_fp_rates(curve, rates=MATCHED_FP_RATES):
    """The highest sensitivity of ``curve`` (rows of ``threshold sensitivity
    fp_per_scan``) among the thresholds with at most ``rate`` false positives per scan,
    for each of ``rates`` (``{"0.5": s, ...}``; 0 when no threshold is that strict).

    A fixed false-positive budget compares how two models *rank* a cohort's candidates
    whatever accept threshold each chose: two models with the same ranking get the same
    figures even when their thresholds differ."""
    out = {}
    for rate in rates:
        within = curve.loc[curve["fp_per_scan"] <= rate, "sensitivity"]
        out[f"{rate:g}"] = float(within.max()) if len(within) else 0.0
    return out


def matched_fp_measures(cand, truths, model, rates=MATCHED_FP_RATES):
    """:func:`sensitivity_at_fp_rates` of ``model`` on ``cand`` (all scans; the grid of
    :data:`THRESHOLD_GRID`, one threshold for both parts' calibrated probabilities)."""
    return sensitivity_at_fp_rates(_threshold_curve(cand, truths, model, "all"), rates)


def _choose_threshold(va, val_truths, model, name):
    """The validation curve of part ``name`` of ``model`` and its chosen row
    (:func:`choose_accept_threshold` with the targets' limits)."""
    curve = _threshold_curve(va, val_truths, model, name)
    return curve, choose_accept_threshold(curve, MAX_FP_PER_SCAN,
                                          calcification_limit(curve, name))


def calcification_limit(curve, name):
    """The most calcifications part ``name`` may accept on the validation scans of
    ``curve`` (:func:`_threshold_curve`): 10 % of them for ``phase``, no limit without."""
    if name != "phase":
        return np.inf
    return (1 - MIN_CALC_REJECTED) * int(curve["calcifications"].iloc[0])


def fit_model(train_c, val_c, val_truths, *, features=None, verbose=False, network=None):
    """Fit, calibrate and choose thresholds (training and validation candidates of the
    families to learn from). Returns the ``phase`` and ``no_phase`` parts.

    ``features``: the candidate features to learn from (default
    :data:`~cmbprep.algorithms.detection.classifier.FEATURES`; the ``no_phase`` part
    leaves the phase features out). ``network``: a patch network
    (:func:`~cmbprep.testing.network_training.fit_patch_network`) whose output the
    validation candidates carry; each part then also gets a ``stack`` calibration, and
    its thresholds apply to the stack's probability (the trees' own are kept in
    ``trees_only``)."""
    from ..algorithms.detection.classifier import FEATURES, PHASE_FEATURES

    features = FEATURES if features is None else tuple(features)
    model = {}
    for name, use_phase in (("phase", True), ("no_phase", False)):
        names = [n for n in features if use_phase or n not in PHASE_FEATURES]
        # the phase part learns from scans with phase; the no-phase part from all scans
        # (their phase features are not used), and is validated on every scan as if it
        # had no phase
        tr = train_c[train_c["has_phase"]] if use_phase else train_c
        va = val_c[val_c["has_phase"]] if use_phase else val_c.assign(has_phase=False)
        weight = CALCIFICATION_WEIGHT if use_phase else 1.0
        part = _fit_part(tr, names, weight)
        part["calcification_weight"] = weight
        part["calibration"] = _calibrate(va, part)
        part["review_score"] = REVIEW_PROBABILITY
        model[name] = part
        curve, best = _choose_threshold(va, val_truths, model, name)
        if network is not None:
            part["trees_only"] = {"accept_score": float(best["threshold"]),
                                  "validation": {k: float(v) for k, v in best.items()}}
            part["stack"] = {"max_logit_shift": NETWORK_MAX_LOGIT_SHIFT}
            part["stack"]["calibration"] = _calibrate_stack(va, part)
            curve, best = _choose_threshold(va, val_truths, {name: part, "network": network},
                                            name)
        part["accept_score"] = float(best["threshold"])
        part["review_score"] = min(REVIEW_PROBABILITY, float(best["threshold"]))
        part["validation"] = {k: float(v) for k, v in best.to_dict().items()}
        if verbose:
            print(f"== {name}\n" + curve.round(3).to_string(index=False), flush=True)
    return model


def _compact(m):
    """The headline numbers of an :func:`evaluate_system` block."""
    v = m["visible"]
    return {"n_scans": m["n_scans"], "f1": v["f1"], "sensitivity": v["sensitivity"],
            "precision": v["precision"], "n_cmbs": v["n_cmbs"],
            "sensitivity_ge3mm": m["sensitivity_ge3mm"], "n_ge3mm": m["n_ge3mm"],
            "fp_per_scan": m["fp_per_scan"], "fp_per_control_scan": m["fp_per_control_scan"],
            "calcifications_as_cmb": m["calcifications_as_cmb"],
            "calcifications": m["calcifications"], "review_per_scan": m["review_per_scan"]}


def _measures(cand, truths, model):
    """The :func:`evaluate_system` blocks of ``cand`` in their headline form
    (:func:`_compact`), as the model file stores them."""
    return {k: _compact(v) for k, v in evaluate_system(cand, truths, model).items()}


def _pooled(train, validation):
    """Candidates and truths of both cohorts (:func:`collect` outputs) together."""
    (train_c, train_t), (val_c, val_t) = train, validation
    return pd.concat([train_c, val_c], ignore_index=True), {**train_t, **val_t}


def model_families(families, hold_out=None):
    """The families a model learns from: ``families`` but ``hold_out`` and
    :data:`TEST_FAMILIES` (sorted)."""
    return sorted(set(families) - {hold_out} - set(TEST_FAMILIES))


def _fit_system(train_c, val_c, val_t, families, patches=None, verbose=False):
    """The two parts fitted on ``families`` (and with ``patches``, a
    :class:`~cmbprep.testing.network_training.PatchBank`, the patch network fitted on
    their training scans and stacked), and the candidate frames with the network's
    output when there is one."""
    from .network_training import fit_patch_network, with_network_probability

    seen = lambda c: c[c["family"].isin(families)]  # noqa: E731
    network = None
    if patches is not None:
        network = fit_patch_network(patches, seen(train_c))
        train_c, val_c = (with_network_probability(c, patches, network)
                          for c in (train_c, val_c))
    model = fit_model(seen(train_c), seen(val_c), val_t, verbose=verbose, network=network)
    if network is not None:
        model["network"] = network
    return model, train_c, val_c


def leave_one_family_out(train, validation, patches=None, matched_fp=False):
    """For each family but :data:`TEST_FAMILIES`: fit and calibrate on the others (test
    families excepted; with ``patches``, the patch network too), score all its scans;
    with ``matched_fp``, also its sensitivity at fixed false-positive rates
    (:func:`matched_fp_measures`, key ``matched_fp``)."""
    (train_c, train_t), (val_c, val_t) = train, validation
    present = pd.concat([train_c, val_c])["family"].unique()
    rows = {}
    for family in model_families(present):
        learn = model_families(present, hold_out=family)
        model, tr, va = _fit_system(train_c, val_c, val_t, learn, patches)
        all_c, all_t = _pooled((tr, train_t), (va, val_t))
        left_out = all_c[all_c["family"] == family]
        rows[family] = _measures(left_out, all_t, model)
        if matched_fp:
            rows[family]["matched_fp"] = matched_fp_measures(left_out, all_t, model)
        print(f"held-out family {family}: " + json.dumps(rows[family]["all"]), flush=True)
    return rows


def train_model(train, validation, *, hold_out=None, lofo=True, patches=None,
                matched_fp=False):
    """Fit on the training scans and calibrate on the validation scans of every family
    but ``hold_out`` and :data:`TEST_FAMILIES`; measure on all scans of ``hold_out``
    when given and of each test family in the data.

    The shipped model is fitted with ``hold_out=HELD_OUT_FAMILY`` (``make
    train-classifier``), so the benchmark's held-out family is one it never saw; the
    leave-one-family-out table estimates the same for every family.

    Parameters
    ----------
    train, validation : tuple
        From :func:`collect`.
    hold_out : str, optional
        Family left out of fitting, calibration and thresholds.
    lofo : bool
        Add the leave-one-family-out table.
    patches : PatchBank, optional
        Patches of every candidate (:func:`~cmbprep.testing.network_training.patch_bank`):
        the model then also holds a patch network, stacked with the trees.
    matched_fp : bool
        Add each left-out family's sensitivity at fixed false-positive rates to the
        leave-one-family-out table (:func:`matched_fp_measures`).

    Returns
    -------
    dict
        The model (JSON-serialisable).
    """
    import dataclasses

    import sklearn

    from .. import __version__
    from ..algorithms.detection.classifier import MODEL_KIND
    from .phantom.randomise import FAMILIES

    train_c, train_t = train
    val_c, val_t = validation
    families = model_families(train_c["family"].unique(), hold_out)
    seen = lambda c: c[c["family"].isin(families)]  # noqa: E731
    parts, train_c, val_c = _fit_system(train_c, val_c, val_t, families, patches,
                                        verbose=True)
    train, validation = (train_c, train_t), (val_c, val_t)
    version = MODEL_VERSION + ("+network" if patches is not None else "")
    model = {"kind": MODEL_KIND, "version": version,
             "created_with": f"cmbprep {__version__}, scikit-learn {sklearn.__version__}",
             "training": {"seeds": sorted(int(s) for s in seen(train_c)["seed"].unique()),
                          "families": {f: dataclasses.asdict(FAMILIES[f]) for f in families}},
             "validation": {"seeds": sorted(int(s) for s in seen(val_c)["seed"].unique())},
             "selection": ("score = logistic (Platt) calibration on validation candidates of "
                           + ("the calibrated trees' logit moved toward the patch "
                              "network's by at most max_logit_shift" if patches is not None
                              else "the boosted trees' output")
                           + "; accept_score maximises validation F1 "
                           f"(visible-CMB truth; averaged over {F1_SMOOTHING_POINTS} "
                           "neighbouring thresholds) among thresholds with at most "
                           f"{MAX_FP_PER_SCAN} false positives per scan and (phase part) at "
                           f"least {MIN_CALC_REJECTED:.0%} of calcifications not accepted; "
                           f"review_score = calibrated probability {REVIEW_PROBABILITY}"),
             **parts}
    model["validation"]["measured"] = _measures(seen(val_c), val_t, model)
    all_c, all_t = _pooled(train, validation)
    if hold_out:
        model["held_out"] = {"family": hold_out,
                             "description": FAMILIES[hold_out].description,
                             "measured": _measures(all_c[all_c["family"] == hold_out],
                                                   all_t, model)}
    measure_test_families(model, all_c, all_t)
    if lofo:
        model["leave_one_family_out"] = leave_one_family_out(train, validation, patches,
                                                             matched_fp)
    return model


def measure_test_families(model, cand, truths):
    """Set ``model["test_families"]``: the model's measures on every scan of each
    :data:`TEST_FAMILIES` family in ``cand`` (candidates of both cohorts)."""
    from .phantom.randomise import FAMILIES

    tests = [f for f in TEST_FAMILIES if f in set(cand["family"])]
    if tests:
        model["test_families"] = {
            f: {"description": FAMILIES[f].description,
                "measured": _measures(cand[cand["family"] == f], truths, model)}
            for f in tests}
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="directory for simulated scans")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--simulate-only", action="store_true",
                        help="only simulate and SWI-process the scans into the cache")
    parser.add_argument("--collect-only", action="store_true",
                        help="only simulate and extract candidates")
    parser.add_argument("--hold-out", metavar="FAMILY", default=HELD_OUT_FAMILY,
                        help="leave this family out of the model (default "
                        f"{HELD_OUT_FAMILY!r}, as the shipped model; 'none': all but the test "
                        f"families {', '.join(TEST_FAMILIES)})")
    parser.add_argument("--no-lofo", action="store_true",
                        help="skip the leave-one-family-out table")
    parser.add_argument("--matched-fp", action="store_true",
                        help="add each left-out family's sensitivity at "
                        f"{', '.join(f'{r:g}' for r in MATCHED_FP_RATES)} false positives "
                        "per scan to the leave-one-family-out table (not in the shipped "
                        "model)")
    parser.add_argument("--network", action="store_true",
                        help="also fit the patch network and stack it with the trees "
                        "(cmbprep.testing.network_training; not the shipped model)")
    parser.add_argument("--output", default=None, help="model JSON (default: packaged path)")
    parser.add_argument("--measure-test-families", action="store_true",
                        help="only (re)measure the model at --output on the test families "
                        f"{', '.join(TEST_FAMILIES)} (its trees untouched)")
    args = parser.parse_args(argv)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    if args.simulate_only:
        simulate_all(scan_list("train") + scan_list("validation"), args.cache, args.jobs)
        return 0
    from ..algorithms.detection.classifier import DEFAULT_MODEL_PATH
    from .network_training import patch_bank, with_network_probability

    output = args.output or DEFAULT_MODEL_PATH
    if args.measure_test_families:
        specs = [s for c in ("train", "validation") for s in scan_list(c)
                 if s.family in TEST_FAMILIES]
        model = json.loads(Path(output).read_text())
        cand, truths = collect(specs, args.cache, args.jobs)
        if "network" in model:
            cand = with_network_probability(cand, patch_bank(cand, args.cache),
                                            model["network"])
        model = measure_test_families(model, cand, truths)
        write_text_atomic(output, json.dumps(model, separators=(",", ":")) + "\n")
        print(json.dumps(model["test_families"], indent=1, default=float))
        return 0
    data = {c: collect(scan_list(c), args.cache, args.jobs) for c in ("train", "validation")}
    if args.collect_only:
        return 0
    hold_out = None if args.hold_out.lower() == "none" else args.hold_out
    patches = None
    if args.network:
        patches = patch_bank(pd.concat([data["train"][0], data["validation"][0]]),
                             args.cache)
    model = train_model(data["train"], data["validation"], hold_out=hold_out,
                        lofo=not args.no_lofo, patches=patches,
                        matched_fp=args.matched_fp)
    write_text_atomic(output, json.dumps(model, separators=(",", ":")) + "\n")
    print(json.dumps({k: model[k] for k in ("validation", "held_out", "test_families")
                      if k in model},
                     indent=1, default=float))
    if "leave_one_family_out" in model:
        print(json.dumps(model["leave_one_family_out"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
