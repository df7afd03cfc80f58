"""The detection interface and sub-workflow on NIfTI files (oblique, flipped grid)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cmbprep.algorithms.detection import CMB_COLUMNS
from cmbprep.algorithms.detection.classifier import load_model
from cmbprep.errors import DataError
from cmbprep.interfaces.detection import DetectMicrobleeds
from cmbprep.workflows.detection import init_detection_wf

from .test_detection import pipeline_swi, simulate_gre


def _rotation():
    angle = np.deg2rad(20)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                    [0, np.sin(angle), np.cos(angle)]])
    return rot @ np.diag([-1.0, 1.0, 1.0])  # oblique and left-right flipped storage


SPHERES = [((9.0, 9.0, 8.0), 0.6, 1.0), ((21.0, 11.0, 15.0), 0.6, 1.2),
           ((20.0, 20.0, 8.0), 0.6, -1.5)]  # the last one is a calcification
CYLINDERS = [((10.0, 20.0, 12.0), (0.3, 0.2, 1.0), 0.5, 0.45)]


@pytest.fixture(scope="module")
def nifti_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    rot = _rotation()
    mag, phase, affine = simulate_gre(spheres=SPHERES, cylinders=CYLINDERS, seed=5,
                                      rotation=rot)
    swi, phase = pipeline_swi(mag, phase, affine)  # what the pipeline gives the detector
    mask = np.zeros(mag.shape, np.uint8)
    mask[3:-3, 3:-3, 2:-2] = 1
    dseg = np.zeros(mag.shape, np.int16)
    dseg[mask > 0] = 1
    dseg[: mag.shape[0] // 2][mask[: mag.shape[0] // 2] > 0] = 2
    paths = {}
    for name, data in (("swi", swi), ("phase", phase), ("mask", mask), ("dseg", dseg),
                       ("minip", ndi.minimum_filter1d(swi, 3, axis=2))):
        paths[name] = str(root / f"{name}.nii.gz")
        nib.Nifti1Image(data, affine).to_filename(paths[name])
    lut = pd.DataFrame({"index": [1, 2], "name": ["Right cerebellum", "Left parietal lobe"],
                        "abbreviation": ["RC", "LP"], "color": ["#ff0000", "#00ff00"],
                        "mapping": ["n/a", "n/a"],
                        "mars_category": ["infratentorial", "lobar"],
                        "hemisphere": ["right", "left"]})
    paths["dseg_tsv"] = str(root / "dseg.tsv")
    lut.to_csv(paths["dseg_tsv"], sep="\t", index=False)
    truth = [np.asarray(c) / np.array([0.5, 0.5, 1.0]) - 0.5 for c, _, _ in SPHERES]
    paths["truth_ras"] = [nib.affines.apply_affine(affine, t) for t in truth]
    return paths


def _truth_distance(table, point):
    pts = table[["x", "y", "z"]].to_numpy(float)
    return np.linalg.norm(pts - point, axis=1).min() if len(pts) else np.inf


def test_workflow_outputs(nifti_inputs, tmp_path):
    wf = init_detection_wf(detector="cmbprep", seed=3, omp_nthreads=1)
    wf.base_dir = str(tmp_path)
    inputs = wf.get_node("inputnode").inputs
    inputs.swi = nifti_inputs["swi"]
    inputs.minip = nifti_inputs["minip"]
    inputs.filtered_phase = nifti_inputs["phase"]
    inputs.brain_mask = nifti_inputs["mask"]
    inputs.dseg = nifti_inputs["dseg"]
    inputs.dseg_tsv = nifti_inputs["dseg_tsv"]
    inputs.template_to_swi_xfm = "n/a"
    graph = wf.run()
    node = [n for n in graph.nodes() if n.name == "detect"][0]
    out = node.result.outputs
    cmb = pd.read_csv(out.cmb_tsv, sep="\t", keep_default_na=False)
    assert list(cmb.columns) == CMB_COLUMNS
    cand = pd.read_csv(out.candidates_tsv, sep="\t", keep_default_na=False)
    assert {"score", "status", "reason"} <= set(cand.columns)
    # the larger microbleed is accepted; the smaller one is accepted or left for the
    # rater (classifier v6 leaves it for review: test_both_block_microbleeds_are_accepted);
    # the calcification and the vein are not accepted
    larger, smaller = nifti_inputs["truth_ras"][1], nifti_inputs["truth_ras"][0]
    assert _truth_distance(cmb, larger) < 1.5
    assert len(cmb) == 1 + (_truth_distance(cmb, smaller) < 1.5)
    shown = cand[cand["status"].isin(["cmb", "review"])]
    assert _truth_distance(shown, smaller) < 1.5
    assert (cmb["mni_x"] == "n/a").all()
    # region lookup: left part of the array (flipped storage) is label 2
    assert set(cmb["mars_category"]) <= {"lobar", "infratentorial"}
    calc = cand.loc[np.argmin(np.linalg.norm(
        cand[["x", "y", "z"]].to_numpy(float) - nifti_inputs["truth_ras"][2], axis=1))]
    # not reported as a microbleed (a borderline score may send it to the rater)
    assert calc["status"] != "cmb" and "not_paramagnetic" in calc["reason"]
    assert float(calc["score"]) < float(out.detection_meta["accept_score"])
    with open(out.cmb_sidecar) as fobj:
        sidecar = json.load(fobj)
    assert set(sidecar) == set(CMB_COLUMNS)
    dseg = nib.load(out.cmb_dseg)
    data = np.asarray(dseg.dataobj)
    assert sorted(np.unique(data)) == list(range(len(cmb) + 1))
    assert np.allclose(dseg.affine, nib.load(nifti_inputs["swi"]).affine)
    mask = np.asarray(nib.load(out.cmb_mask).dataobj)
    np.testing.assert_array_equal(mask > 0, data > 0)
    meta = out.detection_meta
    assert meta["detector"] == "cmbprep" and meta["seed"] == 3 and meta["phase_sign"] in (1, -1)
    json.dumps(meta)  # serialisable for sidecars


@pytest.mark.xfail(strict=True, reason="classifier v6 (and the baseline refit of v5's "
                   "recipe) score the smaller block microbleed (radius 0.6 mm, 1 ppm) 0.35 "
                   "(0.45), below accept 0.62 (0.60), and leave it for review; v5 accepted "
                   "it (0.91)")
def test_both_block_microbleeds_are_accepted(nifti_inputs):
    from cmbprep.algorithms.detection import detect_cmbprep

    swi = nib.load(nifti_inputs["swi"])
    result = detect_cmbprep(np.asarray(swi.dataobj, np.float32),
                            np.asarray(nib.load(nifti_inputs["mask"]).dataobj) > 0,
                            swi.affine,
                            filtered_phase=np.asarray(nib.load(nifti_inputs["phase"]).dataobj,
                                                      np.float32))
    accepted = result.candidates[result.candidates["status"] == "cmb"]
    for centre in nifti_inputs["truth_ras"][:2]:
        assert _truth_distance(accepted, centre) < 1.5


def _run_detection_wf(nifti_inputs, base_dir, **options):
    """The ``cmbprep`` detection workflow (seed 3, two threads, ``options``) run on the
    block scene; its nodes by name."""
    wf = init_detection_wf(detector="cmbprep", seed=3, omp_nthreads=2, **options)
    wf.base_dir = str(base_dir)
    inputs = wf.get_node("inputnode").inputs
    for name, key in (("swi", "swi"), ("filtered_phase", "phase"), ("brain_mask", "mask"),
                      ("dseg", "dseg"), ("dseg_tsv", "dseg_tsv")):
        setattr(inputs, name, nifti_inputs[key])
    inputs.template_to_swi_xfm = "n/a"
    return {n.name: n for n in wf.run().nodes()}


def test_workflow_chunks_equal_one_node(nifti_inputs, tmp_path):
    """Three nodes with the analysis in two chunks write what one node writes."""
    nodes = _run_detection_wf(nifti_inputs, tmp_path / "wf")
    assert {"find_candidates", "analyse_candidates", "detect"} <= set(nodes)
    staged = nodes["detect"].result.outputs
    assert len(nodes["analyse_candidates"].result.outputs.analysed) == 2
    (tmp_path / "one").mkdir()
    one = DetectMicrobleeds(
        swi=nifti_inputs["swi"], filtered_phase=nifti_inputs["phase"],
        brain_mask=nifti_inputs["mask"], dseg=nifti_inputs["dseg"],
        dseg_tsv=nifti_inputs["dseg_tsv"], seed=3,
        code_id=nodes["detect"].inputs.code_id).run(cwd=str(tmp_path / "one")).outputs
    for name in ("candidates_tsv", "candidates_sidecar", "cmb_tsv", "cmb_sidecar"):
        with open(getattr(one, name), "rb") as a, open(getattr(staged, name), "rb") as b:
            assert a.read() == b.read(), name
    for name in ("cmb_dseg", "cmb_mask"):
        a, b = nib.load(getattr(one, name)), nib.load(getattr(staged, name))
        assert a.get_data_dtype() == b.get_data_dtype()
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert json.dumps(one.detection_meta) == json.dumps(staged.detection_meta)


def test_interface_bian2013_and_template_points(nifti_inputs, tmp_path):
    ants = pytest.importorskip("ants")
    xfm = str(tmp_path / "xfm.mat")
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    translation=(1.0, 2.0, 3.0))
    ants.write_transform(tx, xfm)
    iface = DetectMicrobleeds(detector="bian2013", swi=nifti_inputs["swi"],
                              minip=nifti_inputs["minip"], brain_mask=nifti_inputs["mask"],
                              template_to_swi_xfm=xfm)
    res = iface.run(cwd=str(tmp_path))
    cand = pd.read_csv(res.outputs.candidates_tsv, sep="\t", keep_default_na=False)
    assert len(cand) > 0
    # ANTs works in LPS: a (1, 2, 3) LPS translation is (-1, -2, +3) in RAS
    np.testing.assert_allclose(cand["mni_x"].astype(float), cand["x"] - 1.0, atol=1e-4)
    np.testing.assert_allclose(cand["mni_y"].astype(float), cand["y"] - 2.0, atol=1e-4)
    np.testing.assert_allclose(cand["mni_z"].astype(float), cand["z"] + 3.0, atol=1e-4)
    assert res.outputs.detection_meta["detector"] == "bian2013"
    assert (cand["region"] == "n/a").all()


def test_interface_rejects_mismatched_mask(nifti_inputs, tmp_path):
    bad = tmp_path / "bad_mask.nii.gz"
    nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)).to_filename(bad)
    iface = DetectMicrobleeds(swi=nifti_inputs["swi"], brain_mask=str(bad))
    with pytest.raises(DataError, match="bad_mask"):
        iface.run(cwd=str(tmp_path))


def test_unknown_detector_in_workflow():
    with pytest.raises(ValueError):
        init_detection_wf(detector="other", seed=0, omp_nthreads=1)


@pytest.mark.parametrize("detector", ["cmbprep", "bian2013"])
def test_interface_no_candidates(tmp_path, detector):
    rng = np.random.default_rng(7)
    data = (1.0 + 0.01 * rng.standard_normal((30, 30, 20))).astype(np.float32)
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    paths = {}
    for name, arr in (("swi", data), ("mask", np.ones(data.shape, np.uint8))):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.Nifti1Image(arr, affine).to_filename(paths[name])
    res = DetectMicrobleeds(detector=detector, swi=paths["swi"], minip=paths["swi"],
                            brain_mask=paths["mask"]).run(cwd=str(tmp_path))
    cmb = pd.read_csv(res.outputs.cmb_tsv, sep="\t")
    assert list(cmb.columns) == CMB_COLUMNS and len(cmb) == 0
    assert np.asarray(nib.load(res.outputs.cmb_mask).dataobj).sum() == 0
    assert res.outputs.detection_meta["n_cmb"] == 0


def test_node_hash_follows_the_model(tmp_path, monkeypatch):
    """A different model file changes the node's inputs, so Nipype re-runs detection."""
    import cmbprep.algorithms.detection.parameters as detection

    wf = init_detection_wf(detector="cmbprep", seed=0, omp_nthreads=1)
    code = wf.get_node("detect").inputs.code_id
    assert code.startswith("cmbprep ") and "model sha256:" in code
    for stage in ("find_candidates", "analyse_candidates"):  # every stage re-runs
        assert wf.get_node(stage).inputs.code_id == code
    other = tmp_path / "model.json"
    other.write_text(detection.DEFAULT_MODEL_PATH.read_text().replace('"version":',
                                                                        '"version_":', 1))
    monkeypatch.setattr(detection, "DEFAULT_MODEL_PATH", other)
    assert init_detection_wf(detector="cmbprep", seed=0,
                             omp_nthreads=1).get_node("detect").inputs.code_id != code
    assert "model" not in init_detection_wf(detector="bian2013", seed=0,
                                            omp_nthreads=1).get_node("detect").inputs.code_id


def test_fixed_handedness_sets_the_detector_phase_sign():
    """--phase-handedness left/right is passed on: the detector does not re-guess the
    sign of a paramagnetic phase on the image's veins (issue 11: on 1 of 12 held-out
    scans that calibration was wrong)."""
    for handedness, sign in (("left", 1), ("right", -1)):
        wf = init_detection_wf(detector="cmbprep", seed=0, omp_nthreads=1,
                               handedness=handedness)
        assert wf.get_node("find_candidates").inputs.parameters == {"phase_sign": sign}
    wf = init_detection_wf(detector="cmbprep", seed=0, omp_nthreads=1, handedness="auto")
    assert not wf.get_node("find_candidates").inputs.parameters  # calibrated on veins


def test_workflow_with_a_patch_network_model(nifti_inputs, tmp_path):
    """A classifier file with a patch network through the pipeline's three nodes: the
    scoring node reads the volumes the network needs, writes ``network_probability``
    (described in the sidecar) and what one node writes."""
    from cmbprep.algorithms.detection.network import export_mlp

    from .test_patch_network import _stacked, small_network_fit

    model = tmp_path / "stacked.json"
    model.write_text(json.dumps(_stacked(load_model(), export_mlp(small_network_fit()[0]))))
    nodes = _run_detection_wf(nifti_inputs, tmp_path / "wf", model=str(model))
    staged = nodes["detect"].result.outputs
    cand = pd.read_csv(staged.candidates_tsv, sep="\t", na_values="n/a")
    kept = ~cand["screened_out"].astype(bool)
    assert cand.loc[kept, "network_probability"].between(0, 1).all() and kept.sum() >= 2
    with open(staged.candidates_sidecar) as fobj:
        assert "network_probability" in json.load(fobj)
    (tmp_path / "one").mkdir()
    one = DetectMicrobleeds(
        swi=nifti_inputs["swi"], filtered_phase=nifti_inputs["phase"],
        brain_mask=nifti_inputs["mask"], dseg=nifti_inputs["dseg"],
        dseg_tsv=nifti_inputs["dseg_tsv"], seed=3, parameters={"model": str(model)},
    ).run(cwd=str(tmp_path / "one")).outputs
    with open(one.candidates_tsv, "rb") as a, open(staged.candidates_tsv, "rb") as b:
        assert a.read() == b.read()
