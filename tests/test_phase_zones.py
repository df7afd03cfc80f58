"""Phase-mask artefact zones (issue 11): where the SWI's phase mask darkens a large region
whose magnitude is normal, the detector looks at the bias-corrected magnitude and scores
without phase."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import ncx2

from cmbprep.algorithms.detection import (
    column_descriptions,
    detect_cmbprep,
    phase_artefact_zones,
    zone_detection_image,
)
from cmbprep.algorithms.swi import process_swi
from cmbprep.workflows.detection import init_detection_wf

from .test_detection import _voxel_of, simulate_gre

ZONE_CENTRE = np.array([13.0, 13.0, 13.0])  # mm in the block
# on the flank of the zone, where the phase mask^4 is about 0.15: on the SWI its
# half-depth region runs into the darker zone centre
LESION = tuple(ZONE_CENTRE + [7.0 / np.sqrt(2), 7.0 / np.sqrt(2), 0.0])
FAR_LESION = (31.0, 31.0, 22.0)  # about 17 mm from the zone's edge


def _grid_mm(shape, affine):
    vs = np.diag(affine)[:3]
    return np.indices(shape).transpose(1, 2, 3, 0) * vs + vs / 2


@pytest.fixture(scope="module")
def zone_scene():
    """A 1.6 mm microbleed in a phase-mask artefact zone, one outside, two veins (for the
    phase-sign calibration). The zone: residual background phase (a -2.5 rad Gaussian
    bump, sigma 6 mm) added to the SWI chain's filtered phase, and the SWI darkened by its
    phase mask to the power 4, as the SWI chain does; the magnitude is untouched."""
    spheres = [(LESION, 0.8, 1.0), (FAR_LESION, 0.8, 1.0)]
    cylinders = [((30.0, 10.0, 15.0), (0.3, 0.2, 1.0), 0.5, 0.4),
                 ((10.0, 30.0, 15.0), (0.1, 0.3, 1.0), 0.5, 0.4)]
    mag, phase, affine = simulate_gre(size_mm=(40.0, 40.0, 30.0), spheres=spheres,
                                      cylinders=cylinders, seed=4)
    out = process_swi(mag[..., None], phase[..., None], affine, input_kind="gre",
                      echo_times=[0.02], phase_units="rad", n_threads=1)
    swi, filtered, magnitude = out["swi"], out["filtered_phase"], out["magnitude"]
    # the SWI's phase mask darkens the negative phase of its convention
    sign = 1.0 if out["meta"]["Handedness"] == "left" else -1.0
    r = np.linalg.norm(_grid_mm(swi.shape, affine) - ZONE_CENTRE, axis=-1)
    background = -2.5 * np.exp(-r ** 2 / (2 * 6.0 ** 2))
    swi_zone = (swi * np.clip(1 + background / np.pi, 0, 1) ** 4).astype(np.float32)
    filtered_zone = (filtered + sign * background).astype(np.float32)
    brain = np.zeros(swi.shape, bool)
    brain[3:-3, 3:-3, 2:-2] = True
    return dict(swi=swi, swi_zone=swi_zone, filtered=filtered, filtered_zone=filtered_zone,
                magnitude=magnitude, brain=brain, affine=affine)


def _near(table, affine, centre, tol_mm=1.5):
    vs = np.diag(affine)[:3]
    d = np.linalg.norm((table[["i", "j", "k"]].to_numpy(float) - _voxel_of(affine, centre))
                       * vs, axis=1)
    return table[d <= tol_mm]


def test_microbleed_in_a_zone_is_found_with_the_magnitude(zone_scene):
    s = zone_scene
    without = detect_cmbprep(s["swi_zone"], s["brain"], s["affine"],
                             filtered_phase=s["filtered_zone"])
    assert without.parameters["phase_used"]
    assert "phase_artefact_zone" not in without.candidates
    assert "phase_artefact_zone_cm3" not in without.parameters
    # on the SWI the lesion is part of an 18 mm region leaving its patch: screened out
    lesion_voxel = tuple(np.rint(_voxel_of(s["affine"], LESION)).astype(int))
    owner = without.candidates.set_index("candidate_id").loc[without.labels[lesion_voxel]]
    assert owner["screened_out"] and owner["reason"].startswith("screened:")
    assert "large" in owner["reason"] and owner["diameter_mm"] > 10
    assert not (_near(without.candidates, s["affine"], LESION)["status"] == "cmb").any()
    # the zone itself, an 11 mm dark region, is larger than a microbleed: never accepted
    zone = _near(without.candidates, s["affine"], ZONE_CENTRE)
    large = zone[~zone["screened_out"] & (zone["diameter_mm"] > 10)]
    assert len(large) and not (large["status"] == "cmb").any()
    high = large[large["score"] >= without.parameters["accept_score"]]
    assert (high["status"] == "review").all()
    assert high["reason"].str.endswith("too_large_to_accept").all()

    with_mag = detect_cmbprep(s["swi_zone"], s["brain"], s["affine"],
                              filtered_phase=s["filtered_zone"], magnitude=s["magnitude"])
    p = with_mag.parameters
    assert p["phase_used"] and p["phase_sign"] == without.parameters["phase_sign"]
    assert 2.0 < p["phase_artefact_zone_cm3"] < 8.0
    assert p["phase_artefact_zone_model_part"] == "no_phase"
    found = _near(with_mag.candidates, s["affine"], LESION)
    found = found[found["status"] == "cmb"]
    assert len(found) == 1
    row = found.iloc[0]
    assert row["phase_artefact_zone"] and not row["screened_out"]
    assert row["diameter_mm"] < 4
    assert row["score"] >= p["phase_artefact_zone_accept_score"]
    # the lesion owns its region in the label image (the CMB mask)
    assert with_mag.labels[lesion_voxel] == row["candidate_id"]


#: Zone detection switched off (no SWI/magnitude ratio is below 0): the magnitude then
#: only adds ``magnitude_contrast``.
NO_ZONES = {"phase_zone_level": 0.0}


def test_lesion_outside_the_zone_scores_the_same(zone_scene):
    s = zone_scene
    kwargs = dict(filtered_phase=s["filtered_zone"], magnitude=s["magnitude"])
    without = detect_cmbprep(s["swi_zone"], s["brain"], s["affine"], parameters=NO_ZONES,
                             **kwargs).candidates
    with_mag = detect_cmbprep(s["swi_zone"], s["brain"], s["affine"], **kwargs).candidates
    a, b = _near(without, s["affine"], FAR_LESION), _near(with_mag, s["affine"], FAR_LESION)
    assert len(a) == len(b) == 1
    assert not b["phase_artefact_zone"].iloc[0]
    assert a["status"].iloc[0] == b["status"].iloc[0] == "cmb"
    assert b["score"].iloc[0] == pytest.approx(a["score"].iloc[0], abs=0.01)
    assert b["diameter_mm"].iloc[0] == pytest.approx(a["diameter_mm"].iloc[0], rel=0.05)


def test_no_zone_means_no_change(zone_scene):
    """On the SWI without the artefact no zone is found and every candidate is as with
    zone detection switched off (the magnitude then only gives ``magnitude_contrast``);
    without the magnitude the regions are the same."""
    s = zone_scene
    kwargs = dict(filtered_phase=s["filtered"], magnitude=s["magnitude"])
    no_zones = detect_cmbprep(s["swi"], s["brain"], s["affine"], parameters=NO_ZONES,
                              **kwargs)
    with_mag = detect_cmbprep(s["swi"], s["brain"], s["affine"], **kwargs)
    assert with_mag.parameters["phase_artefact_zone_cm3"] == 0.0
    assert not with_mag.candidates["phase_artefact_zone"].any()
    pd.testing.assert_frame_equal(with_mag.candidates, no_zones.candidates)
    np.testing.assert_array_equal(with_mag.labels, no_zones.labels)
    without = detect_cmbprep(s["swi"], s["brain"], s["affine"], filtered_phase=s["filtered"])
    assert "phase_artefact_zone" not in without.candidates
    assert without.candidates["magnitude_contrast"].isna().all()
    geometry = ["i", "j", "k", "volume_mm3", "diameter_mm", "contrast", "screened_out"]
    pd.testing.assert_frame_equal(with_mag.candidates[geometry], without.candidates[geometry])


def _ratio_scene(voxel_size, size_mm=(60.0, 60.0, 48.0)):
    """SWI = magnitude x a phase mask of 0.1 inside an 8 mm ball and a 3 mm ball (too
    small to be a zone), 1 elsewhere; brain = a box 4 mm inside the volume."""
    shape = tuple(int(round(s / v)) for s, v in zip(size_mm, voxel_size))
    affine = np.diag(list(voxel_size) + [1.0])
    x = _grid_mm(shape, affine)
    mask = np.ones(shape, np.float32)
    mask[np.linalg.norm(x - [22.0, 30.0, 24.0], axis=-1) <= 8.0] = 0.1
    mask[np.linalg.norm(x - [46.0, 30.0, 24.0], axis=-1) <= 3.0] = 0.1
    rng = np.random.default_rng(0)
    magnitude = (1.0 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    brain = np.zeros(shape, bool)
    lo = [int(round(4.0 / v)) for v in voxel_size]
    brain[lo[0]:-lo[0], lo[1]:-lo[1], lo[2]:-lo[2]] = True
    return (magnitude * mask).astype(np.float32), magnitude, brain, affine


@pytest.mark.parametrize("voxel_size", [(0.5, 0.5, 1.0), (1.0, 1.0, 2.0)])
def test_zone_volume_in_cm3_does_not_depend_on_the_voxel_size(voxel_size):
    swi, magnitude, brain, affine = _ratio_scene(voxel_size)
    zone = phase_artefact_zones(swi, magnitude, brain, voxel_size)
    cm3 = zone.sum() * np.prod(voxel_size) / 1000
    # the ratio is 0.1 in the 8 mm ball: the 3 mm-smoothed ratio is below 0.5 where the
    # smoothed ball indicator exceeds 0.5 / 0.9, i.e. within the radius d at which a
    # Gaussian (sigma 3 mm) centred d from the ball's centre has that mass inside it
    d = brentq(lambda r: ncx2.cdf(8.0 ** 2 / 9.0, 3, r ** 2 / 9.0) - 0.5 / 0.9, 0.1, 8.0)
    expected = 4 / 3 * np.pi * d ** 3 / 1000  # 1.04 cm^3
    assert cm3 == pytest.approx(expected, rel=0.05)
    x = _grid_mm(swi.shape, affine)
    # the 3 mm ball (0.11 cm^3) makes no zone
    assert not zone[np.linalg.norm(x - [46.0, 30.0, 24.0], axis=-1) <= 3.0].any()
    assert zone[np.linalg.norm(x - [22.0, 30.0, 24.0], axis=-1) <= d - 1.0].all()
    # min_cm3 is in cm^3: a smallest zone just above this one's volume removes it
    assert not phase_artefact_zones(swi, magnitude, brain, voxel_size,
                                    min_cm3=1.15 * expected).any()
    image = zone_detection_image(swi, magnitude, zone, voxel_size)
    centre = np.linalg.norm(x - [22.0, 30.0, 24.0], axis=-1) <= 5.0
    far = np.linalg.norm(x - [22.0, 30.0, 24.0], axis=-1) >= 18.0
    np.testing.assert_allclose(image[centre], magnitude[centre], rtol=1e-6)
    np.testing.assert_array_equal(image[far], swi[far])


def test_zone_volumes_agree_across_grids():
    volumes = []
    for voxel_size in [(0.5, 0.5, 1.0), (1.0, 1.0, 2.0)]:
        swi, magnitude, brain, _ = _ratio_scene(voxel_size)
        zone = phase_artefact_zones(swi, magnitude, brain, voxel_size)
        volumes.append(zone.sum() * np.prod(voxel_size) / 1000)
    assert volumes[1] == pytest.approx(volumes[0], rel=0.05)


def test_the_column_is_described():
    entry = column_descriptions(["phase_artefact_zone"])["phase_artefact_zone"]
    assert "magnitude" in entry["Description"] and set(entry["Levels"]) == {"true", "false"}


def test_workflow_passes_the_magnitude(zone_scene, tmp_path):
    """The staged workflow reads ``inputnode.magnitude``: the zone lesion is accepted and
    the zone volume is in ``detection_meta``."""
    s = zone_scene
    paths = {}
    for name in ("swi_zone", "filtered_zone", "magnitude", "brain"):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.Nifti1Image(s[name].astype(np.float32 if name != "brain" else np.uint8),
                        s["affine"]).to_filename(paths[name])
    wf = init_detection_wf(detector="cmbprep", seed=0, omp_nthreads=1)
    wf.base_dir = str(tmp_path / "wf")
    inputs = wf.get_node("inputnode").inputs
    inputs.swi = paths["swi_zone"]
    inputs.filtered_phase = paths["filtered_zone"]
    inputs.magnitude = paths["magnitude"]
    inputs.brain_mask = paths["brain"]
    inputs.dseg = inputs.dseg_tsv = inputs.template_to_swi_xfm = "n/a"
    graph = wf.run()
    out = [n for n in graph.nodes() if n.name == "detect"][0].result.outputs
    assert out.detection_meta["phase_artefact_zone_cm3"] > 2.0
    json.dumps(out.detection_meta)
    cand = pd.read_csv(out.candidates_tsv, sep="\t", keep_default_na=False)
    in_zone = cand[cand["phase_artefact_zone"].astype(str).str.lower() == "true"]
    assert (in_zone["status"] == "cmb").sum() == 1
    with open(out.candidates_sidecar) as fobj:
        assert "phase_artefact_zone" in json.load(fobj)
