"""Scoring of detections against phantom truth (cmbprep.testing.scoring)."""

import numpy as np
import pandas as pd
import pytest

from cmbprep.testing.scoring import (
    label_detections,
    match_detections,
    matching_radius_mm,
    scan_bootstrap,
    sensitivity_at_fp_rate,
    summarise,
)


def _truth(rows):
    return pd.DataFrame(rows, columns=["kind", "x", "y", "z", "apparent_diameter_mm",
                                       "mars_category"])


def test_matching_radius():
    np.testing.assert_allclose(matching_radius_mm([0, 2, 6]), [3.0, 3.0, 4.5])


def test_match_is_one_to_one_and_minimises_distance():
    truth = np.array([[0, 0, 0], [5, 0, 0]], float)
    det = np.array([[1, 0, 0], [4, 0, 0], [2.5, 0, 0]], float)
    pairs = sorted(match_detections(det, truth, [3.0, 3.0]))
    assert pairs == [(0, 0), (1, 1)]
    assert match_detections(det, truth, [0.5, 0.5]) == []
    assert match_detections(np.zeros((0, 3)), truth, [3, 3]) == []


def test_labels_visible_invisible_calcification():
    truth = _truth([
        ("cmb", 0, 0, 0, 4.0, "lobar"),
        ("cmb", 20, 0, 0, 0.0, "deep"),  # invisible
        ("calcification", 40, 0, 0, 2.0, "deep"),
    ])
    det = pd.DataFrame({"x": [0.5, 1.0, 20.5, 40.2, 80.0], "y": 0.0, "z": 0.0})
    labels, which = label_detections(det, truth)
    assert list(labels) == ["cmb", "none", "invisible_cmb", "calcification", "none"]
    assert list(which) == [0, -1, 1, 2, -1]
    # training labels: both detections on the first lesion are positives
    labels, _ = label_detections(det, truth, one_to_one=False)
    assert list(labels[:2]) == ["cmb", "cmb"]


def test_summarise_counts():
    truth = _truth([
        ("cmb", 0, 0, 0, 4.0, "lobar"),
        ("cmb", 20, 0, 0, 2.0, "deep"),
        ("cmb", 40, 0, 0, 0.0, "deep"),  # invisible, detected
        ("calcification", 60, 0, 0, 2.0, "deep"),
    ])
    det = pd.DataFrame({"x": [0.2, 40.0, 60.0, 100.0], "y": 0.0, "z": 0.0,
                        "mars_category": ["lobar", "deep", "deep", "lobar"]})
    control = _truth([("calcification", 0, 0, 0, 2.0, "deep")])
    m = summarise([
        {"truth": truth, "detections": det, "protocol": "a"},
        {"truth": control, "detections": det.iloc[:1], "protocol": "a"},
    ])
    # visible truth: 2 CMBs, 1 found; FPs: calcification + stray (scan 1), 1 (control)
    assert m["visible"]["n_cmbs"] == 2 and m["visible"]["true_positives"] == 1
    assert m["false_positives"] == 3
    assert m["visible"]["precision"] == pytest.approx(1 / 4)
    assert m["visible"]["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    # all CMBs: the invisible one counts as found
    assert m["all"]["n_cmbs"] == 3 and m["all"]["true_positives"] == 2
    assert m["fp_per_scan"] == pytest.approx(1.5)
    assert m["fp_per_control_scan"] == pytest.approx(1.0)
    assert (m["calcifications_as_cmb"], m["calcifications"]) == (2, 2)
    assert m["sensitivity_ge3mm"] == 1.0 and m["sensitivity_lt3mm_visible"] == 0.0
    assert m["mars_agreement"] == 1.0 and m["n_mars_pairs"] == 1


def test_sensitivity_at_a_false_positive_rate_is_the_best_threshold_within_it():
    """Two scans, three visible microbleeds; candidates scored so that every threshold
    trades one more microbleed against false positives. Calcifications count as false
    positives, as in summarise."""
    truth = _truth([("cmb", 0, 0, 0, 4.0, "lobar"), ("cmb", 20, 0, 0, 2.0, "deep"),
                    ("calcification", 40, 0, 0, 2.0, "deep")])
    other = _truth([("cmb", 0, 0, 0, 3.0, "lobar")])
    cand = pd.DataFrame({"x": [0.3, 40.0, 20.2, 90.0], "y": 0.0, "z": 0.0,
                         "score": [0.95, 0.9, 0.5, 0.45]})  # cmb, calc, cmb, none
    cand2 = pd.DataFrame({"x": [70.0, 0.1], "y": 0.0, "z": 0.0, "score": [0.8, 0.3]})
    scans = [{"truth": truth, "candidates": cand}, {"truth": other, "candidates": cand2}]
    at_half = sensitivity_at_fp_rate(scans, 0.5)  # at most 1 false positive in 2 scans
    # one microbleed either way; the strictest threshold that finds it is reported
    assert at_half["true_positives"] == 1 and at_half["threshold"] == 0.95
    assert at_half["fp_per_scan"] == 0.0 and at_half["n_cmbs"] == 3
    at_one = sensitivity_at_fp_rate(scans, 1.0)  # two: the calcification and 70 mm
    assert at_one["true_positives"] == 2 and at_one["threshold"] == 0.5
    assert at_one["sensitivity"] == pytest.approx(2 / 3)
    everything = sensitivity_at_fp_rate(scans, 10.0)
    assert everything["true_positives"] == 3 and everything["threshold"] == 0.3
    none = sensitivity_at_fp_rate(scans, 0.0)
    assert none["true_positives"] == 1 and none["fp_per_scan"] == 0.0


def _bootstrap_cohort():
    """Six scans: four with microbleeds found or missed and some false positives, two
    controls (one clean, one with a false positive)."""
    big, small = ("cmb", 0, 0, 0, 4.0, "lobar"), ("cmb", 30, 0, 0, 2.0, "deep")
    hit = pd.DataFrame({"x": [0.2], "y": 0.0, "z": 0.0})
    stray = pd.DataFrame({"x": [80.0], "y": 0.0, "z": 0.0})
    return [
        {"truth": _truth([big, small]), "detections": hit},
        {"truth": _truth([big, small]), "detections": pd.concat([hit, stray])},
        {"truth": _truth([big]), "detections": hit},
        {"truth": _truth([big, small]), "detections": hit.iloc[:0]},
        {"truth": _truth([]), "detections": hit.iloc[:0]},
        {"truth": _truth([]), "detections": stray},
    ]


def test_scan_bootstrap_brackets_the_figure_and_narrows_with_more_scans():
    scans = _bootstrap_cohort()
    m = summarise(scans)
    ci = scan_bootstrap(scans, n_resamples=3000, seed=1, min_scans=6)
    assert ci["n_scans"] == 6 and ci["level"] == 0.95
    for key, value in (("f1", m["visible"]["f1"]),
                       ("sensitivity", m["visible"]["sensitivity"]),
                       ("sensitivity_ge3mm", m["sensitivity_ge3mm"]),
                       ("fp_per_scan", m["fp_per_scan"]),
                       ("fp_per_control_scan", m["fp_per_control_scan"])):
        low, high = ci[key]
        assert low < value < high, (key, low, value, high)
    # same seed, same interval
    assert scan_bootstrap(scans, n_resamples=3000, seed=1, min_scans=6) == ci
    # too few scans for an interval
    assert np.isnan(scan_bootstrap(scans, n_resamples=3000, seed=1)["f1"]).all()
    # four times the scans of the same kind: about half as wide (1/sqrt(4))
    wide = np.diff(ci["f1"])[0]
    narrow = np.diff(scan_bootstrap(scans * 4, n_resamples=3000, seed=1)["f1"])[0]
    assert 0.3 * wide < narrow < 0.75 * wide
    # scans that all score the same leave no doubt
    same = scan_bootstrap([scans[2]] * 10, n_resamples=200)
    assert same["f1"] == [1.0, 1.0] and same["fp_per_scan"] == [0.0, 0.0]
    assert np.isnan(same["fp_per_control_scan"]).all()  # no control was drawn
