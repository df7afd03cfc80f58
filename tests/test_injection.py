"""Simulated lesions injected into real and synthetic gradient-echo data (issue 11)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmbprep.testing.injection import inject_lesions, random_lesions
from cmbprep.testing.phantom.physics import GAMMA_RAD

ROMEO = Path(__file__).parent / "data" / "romeo-small"
ROMEO_TE = [0.005, 0.010, 0.015]  # unknown upstream; 1:2:3 as in test_swi_algorithms.py

N = 40
VOX = 0.5
C = (20, 20, 20)  # lesion centre, voxels (B0 = scanner z = array axis 2 for EYE)
EYE = np.diag([VOX, VOX, VOX, 1.0])


def _uniform(n_echo=1, value=100.0):
    mag = np.full((N, N, N, n_echo), value, np.float32)
    pha = np.full((N, N, N, n_echo), 0.3, np.float32)
    mag.setflags(write=False)
    pha.setflags(write=False)
    return mag, pha


def _analytic_phase(r_mm, cos2, a, dchi, te, b0_t=3.0):
    return GAMMA_RAD * b0_t * 1e-6 * te * dchi / 3 * (a / r_mm) ** 3 * (3 * cos2 - 1)


def _lesion(dchi, a=1.0, centre=C):
    return [{"i": centre[0], "j": centre[1], "k": centre[2], "radius_mm": a, "dchi_ppm": dchi}]


def test_dipole_phase_pattern_and_inputs_unchanged():
    mag, pha = _uniform()
    before = mag.copy(), pha.copy()
    te, a, dchi = 0.020, 1.0, 1.0
    m, p, truth = inject_lesions(mag, pha, EYE, [te], 3.0, _lesion(dchi, a))
    np.testing.assert_array_equal(mag, before[0])
    np.testing.assert_array_equal(pha, before[1])
    assert m.shape == mag.shape and p.shape == pha.shape and p.dtype == np.float32
    assert np.all(p >= -np.pi) and np.all(p < np.pi)
    d = p[..., 0] - np.float32(0.3)  # lesion phase (small here: no wrapping)
    for steps in (10, 14):  # 5 and 7 mm: beyond the supersampled neighbourhood
        r = steps * VOX
        along = d[C[0], C[1], C[2] + steps]
        across = [d[C[0] + steps, C[1], C[2]], d[C[0], C[1] - steps, C[2]]]
        assert along > 0 and all(x < 0 for x in across)  # paramagnetic, phase_sign +1
        assert along == pytest.approx(_analytic_phase(r, 1.0, a, dchi, te), rel=1e-3)
        for x in across:
            assert x == pytest.approx(_analytic_phase(r, 0.0, a, dchi, te), rel=1e-3)
            assert along / x == pytest.approx(-2.0, rel=1e-3)
    # oblique direction: (3 cos^2 - 1) with cos^2 = 1/2
    diag = d[C[0] + 8, C[1], C[2] + 8]
    assert diag == pytest.approx(_analytic_phase(8 * VOX * np.sqrt(2), 0.5, a, dchi, te),
                                 rel=1e-3)
    # magic angle (cos^2 = 1/3) is ~0 and the signal far away is untouched
    assert abs(m[0, 0, 0, 0] - 100.0) < 1e-3
    # dark core: no signal inside the sphere
    assert m[C + (0,)] < 1.0
    row = truth.iloc[0]
    assert row.kind == "cmb" and row.apparent_diameter_mm > 2 * a
    assert (row.i, row.j, row.k) == C
    np.testing.assert_allclose([row.x, row.y, row.z], np.array(C) * VOX)


def test_b0_follows_the_affine():
    # array axis 0 stores scanner z: the positive lobe is along axis 0
    perm = np.array([[0, 0, VOX, 0], [0, VOX, 0, 0], [VOX, 0, 0, 0], [0, 0, 0, 1.0]])
    mag, pha = _uniform()
    _, p, _ = inject_lesions(mag, pha, perm, [0.02], 3.0, _lesion(1.0))
    d = p[..., 0] - np.float32(0.3)
    assert d[C[0] + 10, C[1], C[2]] > 0 > d[C[0], C[1], C[2] + 10]
    # explicit b0_direction along scanner x: the lobe moves to axis 2 here
    _, p, _ = inject_lesions(mag, pha, perm, [0.02], 3.0, _lesion(1.0),
                             b0_direction=(1, 0, 0))
    d = p[..., 0] - np.float32(0.3)
    assert d[C[0], C[1], C[2] + 10] > 0 > d[C[0] + 10, C[1], C[2]]


def test_calcification_and_phase_sign_flip_the_phase():
    mag, pha = _uniform()
    _, p_cmb, _ = inject_lesions(mag, pha, EYE, [0.02], 3.0, _lesion(1.0))
    _, p_calc, t = inject_lesions(mag, pha, EYE, [0.02], 3.0, _lesion(-1.0))
    _, p_neg, _ = inject_lesions(mag, pha, EYE, [0.02], 3.0, _lesion(1.0), phase_sign=-1)
    assert t.iloc[0].kind == "calcification"
    far = (C[0], C[1], C[2] + 12, 0)
    lobe = p_cmb[far] - 0.3
    assert lobe > 0
    assert p_calc[far] - 0.3 == pytest.approx(-lobe, rel=1e-4)
    assert p_neg[far] - 0.3 == pytest.approx(-lobe, rel=1e-4)


def test_blooming_grows_with_echo_time():
    # (not monotonic for every size/susceptibility: sub-voxel lesions can give disjoint
    # dark lobes; a 1 mm sphere at 0.5 mm voxels blooms steadily)
    tes = [0.010, 0.020, 0.040]
    mag, pha = _uniform(n_echo=len(tes))
    m, _, truth = inject_lesions(mag, pha, EYE, tes, 3.0, _lesion(1.0))
    dark = [(m[..., e] < 50.0).sum() for e in range(len(tes))]
    assert all(b > a for a, b in zip(dark, dark[1:]))
    diam = []
    for te in tes:  # apparent diameter is measured at the longest echo
        one_m, one_p = _uniform()
        diam.append(inject_lesions(one_m, one_p, EYE, [te], 3.0,
                                   _lesion(1.0))[2].iloc[0].apparent_diameter_mm)
    assert all(b > a for a, b in zip(diam, diam[1:]))
    assert diam[-1] == pytest.approx(truth.iloc[0].apparent_diameter_mm)
    # a tiny weak lesion is invisible (never below 50 %): apparent diameter 0
    _, _, t = inject_lesions(*_uniform(), EYE, [0.005], 1.5, _lesion(0.4, a=0.2))
    assert t.iloc[0].apparent_diameter_mm == 0 and t.iloc[0].min_relative_signal > 0.5


def test_arbitrary_phase_units_keep_their_scale():
    mag, pha = _uniform()
    scaled = (pha / np.pi * 0.003674).astype(np.float32)
    scaled[0, 0, 0, 0] = 0.003674  # max |phase| <-> pi
    _, p_rad, _ = inject_lesions(mag, pha, EYE, [0.02], 3.0, _lesion(1.0))
    _, p_arb, _ = inject_lesions(mag, scaled, EYE, [0.02], 3.0, _lesion(1.0),
                                 phase_units="arbitrary")
    assert np.abs(p_arb).max() <= 0.003674 * (1 + 1e-5)
    sel = (C[0], C[1], C[2] + 12, 0)
    assert p_arb[sel] / 0.003674 * np.pi == pytest.approx(p_rad[sel], rel=1e-4)


def test_random_lesions_deterministic_and_placed():
    brain = np.zeros((N, N, N), bool)
    brain[5:35, 5:35, 5:35] = True
    avoid = np.zeros_like(brain)
    avoid[20, :, :] = True  # a dark sheet to stay away from
    a = random_lesions(brain, EYE, 4, np.random.default_rng(3), avoid=avoid,
                       min_spacing_mm=4.0, n_calcifications=1)
    b = random_lesions(brain, EYE, 4, np.random.default_rng(3), avoid=avoid,
                       min_spacing_mm=4.0, n_calcifications=1)
    assert a == b and len(a) == 4
    assert [x["kind"] for x in a] == ["cmb"] * 3 + ["calcification"]
    assert a[-1]["dchi_ppm"] < 0 < a[0]["dchi_ppm"]
    xyz = np.array([[x["x"], x["y"], x["z"]] for x in a])
    assert np.all(np.linalg.norm(xyz[:, None] - xyz[None], axis=2)[np.triu_indices(4, 1)]
                  >= 4.0)
    for x in a:
        assert np.all(np.array([x["i"], x["j"], x["k"]]) >= 5 + 6 - 0.5 - 1)  # >= 3 mm + r
        assert abs(x["i"] - 20) * VOX >= 2.0 + x["radius_mm"] - VOX  # away from the sheet


# ------------------------------------------------------------------ real background
@pytest.fixture(scope="module")
def romeo():
    if not (ROMEO / "Mag.nii.gz").exists():
        pytest.skip("tests/data/romeo-small not present")
    mag = nib.load(ROMEO / "Mag.nii.gz")
    phase = np.asarray(nib.load(ROMEO / "Phase.nii.gz").dataobj, np.float32)
    phase = phase / np.abs(phase).max() * np.float32(np.pi)
    return np.asarray(mag.dataobj, np.float32), phase, mag.affine


def _detect(mag, phase, affine):
    from cmbprep.algorithms.detection import detect_cmbprep
    from cmbprep.algorithms.swi import process_swi

    out = process_swi(mag, phase, affine, input_kind="megre", echo_times=ROMEO_TE,
                      phase_units="rad", n_threads=1)
    return detect_cmbprep(out["swi"], out["head_mask"], affine,
                          filtered_phase=out["filtered_phase"]).candidates


def test_lesion_injected_into_romeo_white_matter_is_found(romeo):
    mag, phase, affine = romeo
    # the untouched crop through the multi-echo chain (test_detection_romeo.py covers the
    # single-echo one): at most one accepted microbleed
    assert (_detect(mag, phase, affine)["status"] == "cmb").sum() <= 1
    # 1.0 mm radius, 2 ppm, in white matter >= 6 mm from the crop's mask edge and >= 4 mm
    # from dark (vein) voxels; phase sign -1 is the crop's convention (see
    # benchmarks/real_background.py)
    les = [{"i": 31, "j": 18, "k": 24, "radius_mm": 1.0, "dchi_ppm": 2.0}]
    m, p, truth = inject_lesions(mag, phase, affine, ROMEO_TE, 3.0, les, phase_sign=-1)
    assert truth.iloc[0].apparent_diameter_mm > 2.0
    table = _detect(m, p, affine)
    xyz = truth[["x", "y", "z"]].to_numpy(float)[0]
    dist = np.linalg.norm(table[["x", "y", "z"]].to_numpy(float) - xyz, axis=1)
    near = table[dist <= 2.0]
    assert len(near) >= 1
    assert near["status"].isin(["cmb", "review"]).any()
    # ... and it is among the two highest-scoring candidates of the crop (the other is a
    # vein candidate)
    assert near["score"].max() >= table["score"].nlargest(2).min()
    # Not tightened to "cmb": with classifier v1 this lesion scored 0.71, with v2 (issue
    # 11) 0.16; both "review". On this small crop the detector finds no vessel to
    # calibrate the phase sign, so the no-phase part scores it (docs/benchmarks.md,
    # "Real background").
