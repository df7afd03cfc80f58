"""``magnitude_contrast`` (issue 11): a microbleed is a signal void on the T2*-weighted
magnitude; a dark dot made only by the SWI's phase mask (a small paramagnetic phase bump
over tissue of normal magnitude, as a thin vessel gives) is not."""

from __future__ import annotations

import numpy as np
import pytest

from cmbprep.algorithms.detection import detect_cmbprep
from cmbprep.algorithms.detection.analysis import magnitude_contrast
from cmbprep.algorithms.swi import process_swi

from .test_detection import simulate_gre
from .test_phase_zones import _grid_mm, _near

LESION = (10.0, 10.0, 12.0)  # 0.8 mm sphere, 1 ppm: blooms on the magnitude
PHASE_DOT = (20.0, 20.0, 12.0)  # phase bump only


@pytest.fixture(scope="module")
def scene():
    """A microbleed, and a phase-only dot: 1.2 rad of paramagnetic phase (Gaussian, sigma
    0.7 mm) added to the filtered phase and the SWI darkened by its phase mask to the
    power 4 there, as the SWI chain does; the magnitude is untouched. Two veins calibrate
    the phase sign."""
    cylinders = [((25.0, 6.0, 12.0), (0.3, 0.2, 1.0), 0.5, 0.4),
                 ((6.0, 25.0, 12.0), (0.1, 0.3, 1.0), 0.5, 0.4)]
    mag, phase, affine = simulate_gre(spheres=[(LESION, 0.8, 1.0)], cylinders=cylinders,
                                      seed=7)
    out = process_swi(mag[..., None], phase[..., None], affine, input_kind="gre",
                      echo_times=[0.02], phase_units="rad", n_threads=1)
    sign = 1.0 if out["meta"]["Handedness"] == "left" else -1.0
    grid = _grid_mm(out["swi"].shape, affine)
    bump = 1.2 * np.exp(-np.sum((grid - PHASE_DOT) ** 2, -1) / (2 * 0.7 ** 2))
    # the phase mask darkens the phase of the SWI convention's paramagnetic side
    swi = (out["swi"] * np.clip(1 - bump / np.pi, 0, 1) ** 4).astype(np.float32)
    filtered = (out["filtered_phase"] + sign * bump).astype(np.float32)
    brain = np.zeros(swi.shape, bool)
    brain[3:-3, 3:-3, 2:-2] = True
    return dict(swi=swi, filtered=filtered, magnitude=out["magnitude"], brain=brain,
                affine=affine)


def test_signal_void_versus_phase_mask_dot(scene):
    s = scene
    res = detect_cmbprep(s["swi"], s["brain"], s["affine"], filtered_phase=s["filtered"],
                         magnitude=s["magnitude"])
    lesion = _near(res.candidates, s["affine"], LESION)
    dot = _near(res.candidates, s["affine"], PHASE_DOT)
    assert len(lesion) == 1 and len(dot) == 1
    # both are dark on the SWI ...
    assert lesion["contrast"].iloc[0] > 0.6 and dot["contrast"].iloc[0] > 0.5
    # ... only the microbleed on the magnitude
    assert lesion["magnitude_contrast"].iloc[0] > 0.5
    assert abs(dot["magnitude_contrast"].iloc[0]) < 0.15


def test_without_magnitude_the_feature_is_missing(scene):
    s = scene
    res = detect_cmbprep(s["swi"], s["brain"], s["affine"], filtered_phase=s["filtered"])
    assert res.candidates["magnitude_contrast"].isna().all()
    assert np.isnan(magnitude_contrast(None, np.ones((2, 2, 2), bool),
                                       (slice(0, 2),) * 3))


def test_magnitude_contrast_reads_the_region_minimum():
    rel = np.ones((6, 6, 6), np.float32)
    rel[2, 3, 3] = 0.25
    rel[4, 4, 4] = 0.0  # outside the region: ignored
    region = np.zeros((3, 3, 3), bool)
    region[1, 1, 1] = region[0, 1, 1] = True
    box = (slice(1, 4), slice(2, 5), slice(2, 5))
    assert magnitude_contrast(rel, region, box) == pytest.approx(0.75)
