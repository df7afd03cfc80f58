"""Scoring of detections against phantom truth (cmbprep.testing.scoring)."""

import numpy as np
import pandas as pd
import pytest

from cmbprep.testing.scoring import (
    label_detections,
    match_detections,
    matching_radius_mm,
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
