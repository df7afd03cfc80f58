"""Boosted-tree classifier of microbleed candidates (prediction in pure numpy).

The model is a gradient-boosted ensemble of small regression trees on the candidate
features (:data:`FEATURES`), fitted at development time with scikit-learn's
``HistGradientBoostingClassifier`` by :mod:`cmbprep.testing.detector_training` on
generated phantoms only, and stored as a small JSON file (:data:`DEFAULT_MODEL_PATH`)
holding every tree, the seeds of the training data and the measured validation numbers.
Prediction (:func:`predict_proba`) walks the trees with numpy: the run time does not
depend on scikit-learn or on pickles.

Two ensembles are stored: ``phase`` (uses :data:`PHASE_FEATURES`) and ``no_phase``
(for inputs without phase, e.g. scanner SWI or magnitude only). Each part carries a
``calibration`` (fitted on validation scans) that maps the trees' output to the
probability that a candidate is a microbleed (:func:`calibrate`; Platt scaling).

A model may also hold a patch ``network`` (:mod:`.network`, on the candidate's
:mod:`.patches`); each part then has a ``stack`` entry whose ``calibration`` maps the
trees' logit, moved toward the network's by at most the entry's ``max_logit_shift``
(:func:`.network.stack_logit`), to the probability, and the part's
``accept_score``/``review_score`` apply to that probability.
The candidate table then carries the network's output as ``network_probability``
(:data:`NETWORK_COLUMN`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .network import check_network, stack_logit

__all__ = [
    "DEFAULT_MODEL_PATH",
    "FEATURES",
    "NETWORK_COLUMN",
    "PHASE_FEATURES",
    "calibrate",
    "check_model",
    "export_hist_gradient_boosting",
    "load_model",
    "model_frame",
    "predict_proba",
    "uses_network",
]

DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "data" / "models" / \
    "cmbprep_classifier.json"

#: Candidate features used by the classifier (columns of the candidate table). All are in
#: mm or dimensionless; none scales with the voxel count (``n_voxels`` is recorded only).
FEATURES = (
    "contrast",
    "magnitude_contrast",
    "diameter_mm",
    "blobness",
    "scale_mm",
    "elongation",
    "elongation_perp_b0",
    "b0_aspect",
    "sphericity",
    "circularity",
    "centroid_shift_mm",
    "hessian_ratio",
    "surrounding_dark_fraction",
    "attached_depth_ratio",
    "distance_to_edge_mm",
    "continuation_fraction",
    "continuation_axiality",
    "tube_length_mm",
    "vesselness_max_shell",
    "blob_vs_vessel",
    "paramagnetic_evidence",
    "dipole_fit_r2",
    "cylinder_fit_r2",
    "dipole_vs_cylinder",
    "dipole_amplitude_snr",
    "dipole_phase_at_radius",
)

#: Features that need phase.
PHASE_FEATURES = ("paramagnetic_evidence", "dipole_fit_r2", "cylinder_fit_r2",
                  "dipole_vs_cylinder", "dipole_amplitude_snr",
                  "dipole_phase_at_radius")

MODEL_KIND = "cmbprep-boosted-trees"

#: Candidate-table column with the patch network's probability (models with a network).
NETWORK_COLUMN = "network_probability"


def uses_network(model):
    """Whether ``model`` combines the trees with a patch network."""
    return "network" in model


def model_frame(features, names=FEATURES):
    """Feature columns as float (booleans become 0/1, ``n/a`` becomes NaN)."""
    return pd.DataFrame({k: pd.to_numeric(features[k], errors="coerce") if k in features
                         else np.nan for k in names}, index=features.index).astype(float)


def export_hist_gradient_boosting(estimator, feature_names):
    """Trees of a fitted binary ``HistGradientBoostingClassifier`` as plain lists.

    Parameters
    ----------
    estimator : sklearn.ensemble.HistGradientBoostingClassifier
        Fitted on numeric features (no categorical ones).
    feature_names : sequence of str
        Column order used for fitting.

    Returns
    -------
    dict
        ``features``, ``baseline`` (raw score before the trees) and ``trees``: for each
        tree the node arrays ``feature threshold missing_left left right leaf value``.
    """
    trees = []
    for iteration in estimator._predictors:  # one predictor per iteration (binary)
        nodes = iteration[0].nodes
        trees.append({
            "feature": nodes["feature_idx"].astype(int).tolist(),
            "threshold": [float(t) for t in nodes["num_threshold"]],
            "missing_left": nodes["missing_go_to_left"].astype(int).tolist(),
            "left": nodes["left"].astype(int).tolist(),
            "right": nodes["right"].astype(int).tolist(),
            "leaf": nodes["is_leaf"].astype(int).tolist(),
            "value": [float(v) for v in nodes["value"]],
        })
    baseline = float(np.ravel(estimator._baseline_prediction)[0])
    return {"features": list(feature_names), "baseline": baseline, "trees": trees}


def _stack(part):
    """Concatenate the trees of an ensemble into flat arrays (node ids made global)."""
    feature, threshold, missing_left, left, right, leaf, value, roots = ([] for _ in range(8))
    offset = 0
    for tree in part["trees"]:
        n = len(tree["feature"])
        roots.append(offset)
        feature += tree["feature"]
        threshold += tree["threshold"]
        missing_left += tree["missing_left"]
        left += [offset + i for i in tree["left"]]
        right += [offset + i for i in tree["right"]]
        leaf += tree["leaf"]
        value += tree["value"]
        offset += n
    return (np.array(feature, int), np.array(threshold, float),
            np.array(missing_left, bool), np.array(left, int), np.array(right, int),
            np.array(leaf, bool), np.array(value, float), np.array(roots, int))


def predict_proba(features, model, *, use_phase, network_probability=None):
    """Probability that each candidate is a microbleed.

    Parameters
    ----------
    features : pandas.DataFrame
        Candidate features (columns of :data:`FEATURES`; missing values allowed).
    model : dict
        Loaded with :func:`load_model`.
    use_phase : bool
        Use the ``phase`` ensemble (``paramagnetic_evidence`` available) or the
        ``no_phase`` one.
    network_probability : (N,) array_like, optional
        The patch network's output for each candidate
        (:func:`.network.network_probability`); needed, and only used, when the model
        has a network (:func:`uses_network`).

    Returns
    -------
    (N,) ndarray in [0, 1]

    Raises
    ------
    ValueError
        When the model has a network and ``network_probability`` is not given.
    """
    part = model["phase" if use_phase else "no_phase"]
    if len(features) == 0:
        return np.zeros(0)
    X = model_frame(features, part["features"]).to_numpy(float)
    feature, threshold, missing_left, left, right, leaf, value, roots = _stack(part)
    node = np.repeat(roots[None, :], len(X), axis=0)  # (samples, trees)
    rows = np.arange(len(X))[:, None]
    while True:
        active = ~leaf[node]
        if not active.any():
            break
        x = X[rows, feature[node]]
        go_left = np.where(np.isnan(x), missing_left[node], x <= threshold[node])
        node = np.where(active, np.where(go_left, left[node], right[node]), node)
    raw = part["baseline"] + value[node].sum(axis=1)
    trees = calibrate(1.0 / (1.0 + np.exp(-raw)), part)
    if not uses_network(model):
        return trees
    if network_probability is None:
        raise ValueError("this classifier combines the trees with a patch network: the "
                         f"candidates' {NETWORK_COLUMN} is needed")
    z = stack_logit(trees, np.asarray(network_probability, dtype=float),
                    part["stack"]["max_logit_shift"])
    return calibrate(1.0 / (1.0 + np.exp(-z)), part["stack"])


def calibrate(probability, part):
    """Map the ensemble's output to a calibrated probability with the part's
    ``calibration`` (fitted on validation data at training time); unchanged when the part
    has none.

    ``{"method": "logistic", "slope": a, "intercept": b}`` (Platt scaling):
    ``1 / (1 + exp(-(a logit(p) + b)))``; ``{"x": [...], "y": [...]}``: a monotone map
    through these knots (linear interpolation, clipped at the ends).
    """
    cal = part.get("calibration")
    if not cal:
        return probability
    if cal.get("method") == "logistic":
        p = np.clip(np.asarray(probability, float), 1e-12, 1.0 - 1e-12)
        z = float(cal["slope"]) * np.log(p / (1.0 - p)) + float(cal["intercept"])
        return 1.0 / (1.0 + np.exp(-z))
    return np.interp(probability, np.asarray(cal["x"], float), np.asarray(cal["y"], float))


@lru_cache(maxsize=4)
def _load(path):
    """The model at ``path``, checked (:func:`check_model`) once per path."""
    with open(path) as fobj:
        try:
            model = json.load(fobj)
        except ValueError as exc:
            raise ValueError(f"{path}: not a cmbprep classifier model (not JSON: "
                             f"{exc})") from None
    if not isinstance(model, dict) or model.get("kind") != MODEL_KIND:
        raise ValueError(f"{path}: not a cmbprep classifier model")
    try:
        check_model(model)
    except ValueError as exc:
        raise ValueError(f"{path}: not a usable cmbprep classifier model: {exc}") from None
    return model


def load_model(path=None):
    """Read a classifier JSON (default: the packaged model).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is not a cmbprep classifier.
    """
    return _load(str(Path(path or DEFAULT_MODEL_PATH)))


_TREE_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


def _number(part, key, name, low=-np.inf, high=np.inf):
    if key not in part:
        raise ValueError(f"{name} has no {key!r}")
    value = part[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not np.isfinite(value) or not low <= value <= high:
        bounds = (f" in [{low:g}, {high:g}]" if np.isfinite(high) else
                  f" >= {low:g}" if np.isfinite(low) else "")
        raise ValueError(f"{name} {key!r} must be a number{bounds}, not {value!r}")


def _check_calibration(calibration, name):
    if not calibration:
        return
    if not isinstance(calibration, dict):
        raise ValueError(f"{name} 'calibration' is not an object")
    if calibration.get("method") == "logistic":
        _number(calibration, "slope", f"{name} calibration", 0.0)
        _number(calibration, "intercept", f"{name} calibration")
        return
    x, y = calibration.get("x"), calibration.get("y")
    if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or not x:
        raise ValueError(f"{name} 'calibration' is neither logistic nor knots x, y")


def _check_trees(trees, n_features, name):
    if not isinstance(trees, list) or not trees:
        raise ValueError(f"{name} 'trees' must be a non-empty list")
    for t, tree in enumerate(trees):
        try:
            arrays = {k: np.asarray(tree[k], float) for k in _TREE_ARRAYS}
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{name} tree {t} lacks one of {', '.join(_TREE_ARRAYS)}") \
                from None
        n = len(arrays["feature"])
        split = arrays["leaf"] == 0
        if n == 0 or any(a.shape != (n,) for a in arrays.values()) or not (
                np.all(arrays["feature"][split] >= 0)
                and np.all(arrays["feature"][split] < n_features)
                and all(np.all((arrays[k][split] > 0) & (arrays[k][split] < n))
                        for k in ("left", "right"))):
            raise ValueError(f"{name} tree {t} is malformed (node arrays of different "
                             "lengths, or a feature or child index out of range)")


def check_model(model):
    """Raise ``ValueError`` naming the first missing or malformed entry of a classifier
    ``model`` (a loaded JSON file); return None when :func:`predict_proba` can use it.

    Both parts (``phase``, ``no_phase``) need known ``features``, a ``baseline``, well-
    formed ``trees``, ``accept_score`` and ``review_score`` in [0, 1], and any
    ``calibration`` they carry must be readable. A model with a ``network``
    (:func:`.network.check_network`) needs a ``stack`` entry with a ``max_logit_shift``
    of at least 0 in both parts, and a ``stack`` entry needs the network.
    """
    for name in ("phase", "no_phase"):
        part = model.get(name)
        if not isinstance(part, dict):
            raise ValueError(f"the {name!r} part is missing")
        features = part.get("features")
        if not isinstance(features, list) or not features:
            raise ValueError(f"{name} 'features' must be a non-empty list")
        unknown = sorted(set(map(str, features)) - set(FEATURES))
        if unknown:
            raise ValueError(f"{name} uses features this version does not compute: "
                             f"{', '.join(unknown)}")
        _number(part, "baseline", name)
        _check_trees(part.get("trees"), len(features), name)
        _number(part, "accept_score", name, 0.0, 1.0)
        _number(part, "review_score", name, 0.0, 1.0)
        _check_calibration(part.get("calibration"), name)
        if uses_network(model):
            if not isinstance(part.get("stack"), dict):
                raise ValueError(f"the model has a network but {name} has no 'stack' entry")
            _number(part["stack"], "max_logit_shift", f"{name} stack", 0.0)
            _check_calibration(part["stack"].get("calibration"), f"{name} stack")
        elif "stack" in part:
            raise ValueError(f"{name} has a 'stack' entry but the model has no network")
    if uses_network(model):
        check_network(model["network"])
