"""The default detector on small physical scenes (issue 11): a vein crossing the slices
at 0, 45 or 90 degrees to B0 is not reported as a microbleed; a microbleed beside a vein
is. Scenes: :func:`cmbprep.testing.scenes.vessel_scene` (dipole field, intravoxel
dephasing, noise), processed by the real SWI chain and detector."""

import numpy as np
import pytest

from cmbprep.algorithms.detection import detect_cmbprep
from cmbprep.algorithms.swi import process_swi
from cmbprep.testing.scenes import vessel_scene


def _detect(scene, with_phase=True):
    out = process_swi(scene.magnitude, scene.phase, scene.affine, input_kind="gre",
                      echo_times=list(scene.echo_times_s), phase_units="rad",
                      handedness="left", n_threads=1)
    phase = out["filtered_phase"] if with_phase else None
    return detect_cmbprep(out["swi"], scene.brain, scene.affine, filtered_phase=phase,
                          magnitude=out["magnitude"])


def _distance_to_axis_mm(cand, scene):
    vox = np.diag(scene.affine)[:3]
    pts = (cand[["i", "j", "k"]].to_numpy(float) - scene.vein_point_vox) * vox
    along = pts @ scene.vein_direction
    return np.linalg.norm(pts - along[:, None] * scene.vein_direction, axis=1)


@pytest.mark.parametrize("angle", [0, 45, 90])
def test_vein_at_any_angle_to_b0_is_not_a_microbleed(angle):
    scene = vessel_scene(angle, seed=angle)
    cand = _detect(scene).candidates
    on_vein = _distance_to_axis_mm(cand, scene) <= 3.0
    assert on_vein.any(), "the vein gave no candidate at all: the scene is too easy"
    accepted = cand[on_vein & (cand["status"] == "cmb")]
    assert accepted.empty, accepted[["i", "j", "k", "score"]]


def _beside_a_vein(angle):
    """Candidates of the scene with a 1.6 mm microbleed 3.5 mm from a vein at ``angle``
    to B0, the distance (mm) of each to the microbleed, and which lie on the vein."""
    scene = vessel_scene(angle, sphere_offset_mm=3.5, seed=10 + angle)
    cand = _detect(scene).candidates
    vox = np.diag(scene.affine)[:3]
    dist = np.linalg.norm((cand[["i", "j", "k"]].to_numpy(float) - scene.sphere_vox) * vox,
                          axis=1)
    on_vein = (_distance_to_axis_mm(cand, scene) <= 1.5) & (dist > 2.5)
    return cand, dist, on_vein


@pytest.mark.parametrize("angle", [0, 90])
def test_microbleed_beside_a_vein_is_found(angle):
    """Found: accepted beside a vein along B0; beside a vein perpendicular to B0 at least
    left for the rater, scored above everything on the vein (see the next test)."""
    cand, dist, on_vein = _beside_a_vein(angle)
    shown = ("cmb",) if angle == 0 else ("cmb", "review")
    found = cand[(dist <= 2.0) & cand["status"].isin(shown)]
    assert len(found) == 1, cand.loc[dist <= 3.0, ["i", "j", "k", "score", "status"]]
    assert found["score"].iloc[0] >= 0.3
    if on_vein.any():
        assert found["score"].iloc[0] > cand.loc[on_vein, "score"].max() + 0.1
    # and the vein itself is still not reported
    assert not (on_vein & (cand["status"] == "cmb")).any()


def test_microbleed_beside_a_vein_perpendicular_to_b0_is_accepted():
    """Classifiers v4 and v5 left it for review (scores 0.44 and 0.54 against accept
    thresholds 0.68 and 0.56; an expected failure then); v3 and v6 accept it (v6: 0.88
    against 0.62)."""
    cand, dist, _ = _beside_a_vein(90)
    assert ((dist <= 2.0) & (cand["status"] == "cmb")).sum() == 1


def test_phase_sign_conflict_with_the_swi_chain_switches_the_phase_off():
    """The detector's vein calibration and the SWI chain's handedness are two estimates of
    one convention: when they disagree the phase is not used (no-phase classifier) and a
    warning says so; when they agree, or the sign is fixed, it is used."""
    scene = vessel_scene(90, sphere_offset_mm=3.5, seed=100)
    out = process_swi(scene.magnitude, scene.phase, scene.affine, input_kind="gre",
                      echo_times=list(scene.echo_times_s), phase_units="rad",
                      handedness="left", n_threads=1)

    def run(**parameters):
        return detect_cmbprep(out["swi"], scene.brain, scene.affine,
                              filtered_phase=out["filtered_phase"], parameters=parameters)

    own = run()
    sign = own.parameters["phase_sign"]
    assert sign in (1, -1) and own.parameters["phase_used"]
    assert own.parameters["phase_sign_reference"] == "n/a" and not own.parameters["warnings"]

    agree = run(phase_sign_reference=sign)
    assert agree.parameters["phase_used"] and not agree.parameters["phase_sign_conflict"]
    assert agree.parameters["model_part"] == "phase"
    assert np.isfinite(agree.candidates["paramagnetic_evidence"]).any()
    assert not agree.parameters["warnings"]

    conflict = run(phase_sign_reference=-sign)
    assert conflict.parameters["phase_sign_conflict"] and not conflict.parameters["phase_used"]
    assert conflict.parameters["model_part"] == "no_phase"
    assert not np.isfinite(conflict.candidates["paramagnetic_evidence"]).any()
    assert len(conflict.parameters["warnings"]) == 1
    assert "phase not used" in conflict.parameters["warnings"][0]
    # same seeds as without phase: the no-phase scoring of the same candidates
    assert len(conflict.candidates) == len(own.candidates)

    fixed = run(phase_sign=sign, phase_sign_reference=-sign)  # a user-fixed sign wins
    assert fixed.parameters["phase_used"] and not fixed.parameters["phase_sign_conflict"]


def test_swi_chain_sign_is_used_when_the_calibration_finds_no_vessel():
    """No vessel to calibrate on (a microbleed alone): without a reference the phase is
    switched off; with the SWI chain's convention it is used, and the microbleed reads
    paramagnetic."""
    scene = vessel_scene(90, vein_radius_mm=0.0, vein_dchi_ppm=0.0, sphere_offset_mm=6.0,
                         seed=7)
    out = process_swi(scene.magnitude, scene.phase, scene.affine, input_kind="gre",
                      echo_times=list(scene.echo_times_s), phase_units="rad",
                      handedness="left", n_threads=1)

    def run(**parameters):
        return detect_cmbprep(out["swi"], scene.brain, scene.affine,
                              filtered_phase=out["filtered_phase"],
                              magnitude=out["magnitude"], parameters=parameters)

    alone = run()
    assert alone.parameters["phase_sign"] == 0 and not alone.parameters["phase_used"]
    assert "could not be calibrated" in alone.parameters["warnings"][0]

    chain = run(phase_sign_reference=1)  # the scene's phase is left-handed
    assert chain.parameters["phase_used"] and chain.parameters["model_part"] == "phase"
    assert chain.parameters["phase_sign"] == 1
    assert chain.parameters["phase_sign_source"] == "swi_chain"
    assert not chain.parameters["phase_sign_conflict"] and not chain.parameters["warnings"]
    cand = chain.candidates
    vox = np.diag(scene.affine)[:3]
    dist = np.linalg.norm((cand[["i", "j", "k"]].to_numpy(float) - scene.sphere_vox) * vox,
                          axis=1)
    bleed = cand[(dist <= 2.0) & (cand["reason"] != "duplicate")]
    assert len(bleed) == 1 and bleed["paramagnetic_evidence"].iloc[0] > 0.2
    assert bleed["status"].iloc[0] == "cmb"
