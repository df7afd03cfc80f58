"""Boosted-tree classifier (cmbprep.algorithms.detection.classifier) and the packaged model."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from cmbprep.algorithms.detection.classifier import (
    FEATURES,
    calibrate,
    export_hist_gradient_boosting,
    load_model,
    model_frame,
    predict_proba,
)
from cmbprep.testing.detector_training import COHORTS, HELD_OUT_FAMILY, TEST_FAMILIES


def test_numpy_prediction_matches_scikit_learn():
    """The exported trees give scikit-learn's probabilities, missing values included."""
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 10, n),
                      "c": rng.normal(size=n)})
    X.loc[rng.random(n) < 0.1, "c"] = np.nan
    logit = 1.5 * X["a"] - np.abs(X["b"] - 5) + np.where(X["c"].isna(), 2.0, X["c"])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    est = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=7, random_state=0,
                                         early_stopping=False).fit(X.to_numpy(), y)
    part = export_hist_gradient_boosting(est, ["a", "b", "c"])
    model = {"phase": part, "no_phase": part}
    test = pd.DataFrame({"a": rng.normal(size=500), "b": rng.uniform(-2, 12, 500),
                         "c": np.where(rng.random(500) < 0.2, np.nan, rng.normal(size=500))})
    ours = predict_proba(test, model, use_phase=True)
    ref = est.predict_proba(test.to_numpy())[:, 1]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert ours.std() > 0.1  # not a constant
    # column order comes from the model, not from the frame
    np.testing.assert_allclose(predict_proba(test[["c", "b", "a"]], model, use_phase=True),
                               ours)


def test_model_frame_converts_columns():
    frame = model_frame(pd.DataFrame({"contrast": ["0.5", "n/a"], "n_voxels": [3, 4]}))
    assert list(frame.columns) == list(FEATURES)
    assert frame["contrast"].iloc[0] == 0.5 and np.isnan(frame["contrast"].iloc[1])
    assert frame["sphericity"].isna().all()


def test_packaged_model_is_valid_and_independent_of_benchmark_and_tests():
    model = load_model()
    benchmark = set(range(1001, 1100))
    train, val = set(model["training"]["seeds"]), set(model["validation"]["seeds"])

    kept_out = {HELD_OUT_FAMILY, *TEST_FAMILIES}

    def seeds(cohort, held_out):
        return {s for f, ss in COHORTS[cohort].items() if (f in kept_out) == held_out
                for s in ss}

    # the held-out and test families never reached the shipped model (fit, calibration,
    # thresholds); test families are measured only, not even used by the
    # leave-one-family-out fits
    assert train == seeds("train", False) and val == seeds("validation", False)
    assert not (seeds("train", True) | seeds("validation", True)) & (train | val)
    assert model["held_out"]["family"] == HELD_OUT_FAMILY
    assert not kept_out & set(model["training"]["families"])
    assert set(model["leave_one_family_out"]) == set(COHORTS["train"]) - set(TEST_FAMILIES)
    assert set(model["test_families"]) == set(TEST_FAMILIES)
    for family in TEST_FAMILIES:
        measured = model["test_families"][family]["measured"]["all"]
        assert measured["n_scans"] == sum(len(COHORTS[c][family]) for c in COHORTS)
    assert not benchmark & (train | val)
    assert not train & val
    assert min(train | val) >= 12000  # above every seed the tests use
    for part in ("phase", "no_phase"):
        p = model[part]
        assert 0 < p["review_score"] <= p["accept_score"] < 1
        assert len(p["trees"]) == p["parameters"]["max_iter"]
        assert p["calibration"]["method"] == "logistic"
        assert p["calibration"]["slope"] > 0  # monotone: a higher raw output, a higher score
        raw = np.linspace(0.001, 0.999, 50)
        assert np.all(np.diff(calibrate(raw, p)) > 0)
    assert "paramagnetic_evidence" in model["phase"]["features"]
    assert "paramagnetic_evidence" not in model["no_phase"]["features"]


def test_packaged_model_orders_obvious_cases():
    """A round, dark (on the magnitude too), paramagnetic blob scores above a faint,
    elongated, diamagnetic one that only the SWI makes dark."""
    model = load_model()
    good = {"contrast": 1.0, "magnitude_contrast": 0.9, "diameter_mm": 4.0, "n_voxels": 40, "blobness": 0.8,
            "scale_mm": 1.35, "elongation": 1.2, "elongation_perp_b0": 1.05,
            "b0_aspect": 1.3, "sphericity": 0.8, "circularity": 0.85,
            "centroid_shift_mm": 0.2, "hessian_ratio": 0.5,
            "surrounding_dark_fraction": 0.0, "attached_depth_ratio": 0.0,
            "distance_to_edge_mm": 20.0, "paramagnetic_evidence": 0.6}
    bad = dict(good, contrast=0.45, magnitude_contrast=0.1, elongation=4.0, elongation_perp_b0=2.4,
               surrounding_dark_fraction=0.4, attached_depth_ratio=1.0,
               paramagnetic_evidence=-0.5)
    frame = pd.DataFrame([good, bad])
    p = predict_proba(frame, model, use_phase=True)
    assert p[0] > model["phase"]["accept_score"] > model["phase"]["review_score"] > p[1], p
    p = predict_proba(frame.drop(columns="paramagnetic_evidence"), model, use_phase=False)
    assert p[0] > 0.5 and p[1] < model["no_phase"]["review_score"], p


def test_calibration_maps_raw_output_through_the_knots():
    part = {"calibration": {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.2, 0.9]}}
    np.testing.assert_allclose(calibrate(np.array([0.0, 0.25, 0.75, 1.0]), part),
                               [0.0, 0.1, 0.55, 0.9])
    raw = np.array([0.3, 0.7])
    np.testing.assert_array_equal(calibrate(raw, {}), raw)  # an uncalibrated part
    platt = {"calibration": {"method": "logistic", "slope": 2.0, "intercept": -1.0}}
    logit = np.log(raw / (1 - raw))
    np.testing.assert_allclose(calibrate(raw, platt), 1 / (1 + np.exp(-(2 * logit - 1))))


def _drop_accept_score(model):
    del model["phase"]["accept_score"]


def _review_score_above_one(model):
    model["no_phase"]["review_score"] = 1.5


def _unknown_feature(model):
    model["phase"]["features"][-1] = "voxel_count_raw"


def _child_out_of_range(model):
    tree = model["phase"]["trees"][3]
    tree["left"][0] = len(tree["left"]) + 5


def _short_node_array(model):
    model["no_phase"]["trees"][0]["value"].pop()


def _stack_without_network(model):
    model["phase"]["stack"] = {"max_logit_shift": 1.0}


def _decreasing_calibration(model):
    model["phase"]["calibration"]["slope"] = -1.0


def _calibration_not_an_object(model):
    model["no_phase"]["calibration"] = [0.5, 1.0]


def _infinite_baseline(model):
    model["phase"]["baseline"] = float("inf")


@pytest.mark.parametrize("change, message", [
    (_drop_accept_score, "phase has no 'accept_score'"),
    (_review_score_above_one, "no_phase 'review_score' must be a number in [0, 1], not 1.5"),
    (_unknown_feature, "features this version does not compute: voxel_count_raw"),
    (_child_out_of_range, "phase tree 3 is malformed"),
    (_short_node_array, "no_phase tree 0 is malformed"),
    (_stack_without_network, "phase has a 'stack' entry but the model has no network"),
    (_decreasing_calibration, "phase calibration 'slope' must be a number >= 0"),
    (_calibration_not_an_object, "no_phase 'calibration' is not an object"),
    (_infinite_baseline, "phase 'baseline' must be a number, not inf"),
])
def test_load_model_names_what_is_wrong_with_a_model_file(tmp_path, change, message):
    """A damaged or incompatible model file fails when it is loaded, in one line naming
    the file and the entry, not later inside the detector with a bare KeyError."""
    model = copy.deepcopy(load_model())
    change(model)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    with pytest.raises(ValueError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{path}: not a usable cmbprep classifier model: ")
    assert message in text and "\n" not in text, text
    # the untouched model, written the same way, loads
    good = tmp_path / "good.json"
    good.write_text(json.dumps(load_model()))
    assert load_model(good)["version"] == load_model()["version"]
