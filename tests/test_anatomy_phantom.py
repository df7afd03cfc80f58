"""Anatomy on the physics phantom: the Nipype anat workflow end to end, brain mask,
region labels against truth, registration-failure detection, determinism, slab FOV.

Registration runs at a coarse resolution (2 mm for the main case, 4 mm where only the
mechanics are tested) to stay fast on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cmbprep.algorithms import lobes
from cmbprep.algorithms import registration as reg
from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.brain import dice
from cmbprep.testing.phantom import PhantomConfig, simulate_subject

MIN_DEPTH_MM = 4.0


def _phantom(seed, **overrides):
    params = {"deformation_mm": 3.0, "n_cmbs": 25, "n_veins": 5, "min_lesion_spacing_mm": 8.0}
    params.update(overrides)
    return simulate_subject(PhantomConfig.from_protocol("small", **params), seed=seed)


def _write(ph, folder):
    folder.mkdir(parents=True, exist_ok=True)
    mag = folder / "magnitude.nii.gz"
    head = folder / "head_mask.nii.gz"
    nib.save(nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine), mag)
    nib.save(nib.Nifti1Image(ph.head_mask.astype(np.uint8), ph.affine), head)
    return mag, head


def _truth_regions(ph, atlas, lut):
    """Atlas region at each CMB's true template coordinate and its depth inside it."""
    cmbs = ph.truth[ph.truth["kind"] == "cmb"].reset_index(drop=True)
    mni = cmbs[["mni_x", "mni_y", "mni_z"]].to_numpy(float)
    truth = lobes.regions_at_points(mni, atlas, lut)
    data = np.asarray(atlas.dataobj)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(atlas.affine), mni)).astype(int)
    vs = voxel_sizes(atlas.affine)
    r = int(np.ceil((MIN_DEPTH_MM + 2) / vs.min()))
    depth = np.zeros(len(cmbs))
    for n, (label, centre) in enumerate(zip(truth["label"], ijk)):
        if label == 0:
            continue
        lo = centre - r
        hi = centre + r + 1
        if np.any(lo < 0) or np.any(hi > data.shape):
            continue
        cube = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == label
        # distance to the nearest voxel of another label (>= r voxels if none in the cube)
        depth[n] = r * vs.min() if cube.all() else ndimage.distance_transform_edt(
            cube, sampling=vs
        )[r, r, r]
    return cmbs, truth, depth


def _placement_accuracy(ph, dseg, lut, atlas):
    cmbs, truth, depth = _truth_regions(ph, atlas, lut)
    ijk = cmbs[["i", "j", "k"]].to_numpy(float)
    found = lobes.regions_at_voxels(np.asarray(dseg.dataobj), ijk, lut)
    ok = depth >= MIN_DEPTH_MM
    same = (found["mars_category"].to_numpy() == truth["mars_category"].to_numpy()) & (
        found["lobe"].to_numpy() == truth["lobe"].to_numpy()
    )
    return int(ok.sum()), float(same[ok].mean()) if ok.any() else float("nan")


@pytest.fixture(scope="module")
def anat_run(tmp_path_factory):
    from cmbprep.workflows.anatomical import init_anat_wf

    base = tmp_path_factory.mktemp("anat")
    ph = _phantom(seed=11)
    mag, head = _write(ph, base / "inputs")
    wf = init_anat_wf(has_t1w=False, omp_nthreads=2, seed=0, registration_resolution_mm=2.0)
    wf.base_dir = str(base / "work")
    wf.inputs.inputnode.magnitude = str(mag)
    wf.inputs.inputnode.head_mask = str(head)
    graph = wf.run()
    out = {}
    for node in graph.nodes():
        if node.name == "anatomical_labels":
            out.update(node.result.outputs.get())
        if node.name == "register_template":
            out.update(node.result.outputs.get())
    return ph, out


def test_workflow_outputs(anat_run):
    ph, out = anat_run
    for key in ("brain_mask", "dseg", "dseg_tsv", "template_to_swi_xfm", "swi_to_template_xfm"):
        assert os.path.exists(out[key]), key
    assert out["template"] == "MNI152NLin2009aSym"
    assert out["atlas_name"] == lobes.ATLAS_NAME
    assert "from-MNI152NLin2009aSym_to-swi_mode-image_xfm.h5" in out["template_to_swi_xfm"]
    lut = pd.read_csv(out["dseg_tsv"], sep="\t", keep_default_na=False)
    assert {"index", "name", "abbreviation", "color", "mapping", "mars_category",
            "hemisphere"} <= set(lut.columns)  # fmt: skip
    meta = out["anat_meta"]
    assert meta["registration_ok"], meta["registration_warnings"]
    assert meta["regions_not_covered"] == []
    assert meta["atlas"]["Sources"]["hammers"]["licence"]
    dseg = nib.load(out["dseg"])
    np.testing.assert_allclose(dseg.affine, ph.affine, atol=1e-4)
    mask = np.asarray(nib.load(out["brain_mask"]).dataobj) > 0
    labels = np.asarray(dseg.dataobj)
    assert (labels[mask] > 0).all() and (labels[~mask] == 0).all()


def test_brain_mask_dice_and_cmbs_inside(anat_run):
    ph, out = anat_run
    mask = np.asarray(nib.load(out["brain_mask"]).dataobj) > 0
    assert dice(mask, ph.brain_mask) >= 0.95
    ijk = np.rint(ph.truth[["i", "j", "k"]].to_numpy(float)).astype(int)
    assert mask[tuple(ijk.T)].all()


def test_cmb_regions_match_truth(anat_run):
    ph, out = anat_run
    atlas, lut = lobes.load_atlas()
    n_eligible, accuracy = _placement_accuracy(ph, nib.load(out["dseg"]), lut, atlas)
    assert n_eligible >= 5
    assert accuracy >= 0.95


def test_points_to_template_close_to_truth(anat_run):
    ph, out = anat_run
    pts = ph.truth[["x", "y", "z"]].to_numpy(float)
    mni = reg.points_to_template(pts, out["template_to_swi_xfm"])
    err = np.linalg.norm(mni - ph.truth[["mni_x", "mni_y", "mni_z"]].to_numpy(float), axis=1)
    assert np.median(err) < 2.5 and err.max() < 8.0, err
    back = reg.points_to_subject(mni, out["swi_to_template_xfm"])
    assert np.abs(back - pts).max() < 0.5


def test_registration_failure_is_detected(tmp_path):
    ph = _phantom(seed=5, n_cmbs=0, deformation_mm=0.0)
    rng = np.random.default_rng(0)
    data = ph.magnitude[..., 0].copy()
    inside = ph.head_mask
    data[inside] = rng.permutation(data[inside])  # same histogram, no anatomy
    res = reg.register_template_to_subject(
        nib.Nifti1Image(data, ph.affine), tmp_path, resolution_mm=4.0, seed=0, n_threads=2
    )
    assert not res.qc["registration_ok"]
    assert any("mutual information" in w for w in res.qc["registration_warnings"])
    good = reg.register_template_to_subject(
        nib.Nifti1Image(ph.magnitude[..., 0], ph.affine),
        tmp_path / "good",
        resolution_mm=4.0,
        seed=0,
        n_threads=2,
    )
    assert good.qc["registration_ok"], good.qc
    assert good.qc["nmi"] > res.qc["nmi"] + 0.02


_DETERMINISM_SCRIPT = """
import sys, numpy as np, nibabel as nib
from cmbprep.algorithms import registration as reg
img = nib.load(sys.argv[1]); pts = np.load(sys.argv[2])
res = reg.register_template_to_subject(img, sys.argv[3], resolution_mm=4.0, seed=7, n_threads=1)
np.save(sys.argv[3] + '/mapped.npy', reg.points_to_template(pts, res.template_to_subject_xfm))
"""


def test_same_seed_same_transform(tmp_path):
    """Same inputs + seed + one ITK thread -> bit-identical transforms (ANTs' Mattes MI
    sums over threads in a varying order, so only single-threaded runs are exact)."""
    import subprocess
    import sys

    ph = _phantom(seed=2, n_cmbs=5, deformation_mm=2.0)
    img_path = tmp_path / "mag.nii.gz"
    nib.save(nib.Nifti1Image(ph.magnitude[..., 0], ph.affine), img_path)
    pts_path = tmp_path / "pts.npy"
    np.save(pts_path, ph.truth[["x", "y", "z"]].to_numpy(float))
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    mapped = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT, str(img_path), str(pts_path), str(out)],
            env=env, check=True,
        )  # fmt: skip
        mapped.append(np.load(out / "mapped.npy"))
    np.testing.assert_array_equal(mapped[0], mapped[1])
    truth = ph.truth[["mni_x", "mni_y", "mni_z"]].to_numpy(float)
    assert np.median(np.linalg.norm(mapped[0] - truth, axis=1)) < 4.0  # not degenerate


def test_slab_fov_reports_uncovered_regions(tmp_path):
    ph = _phantom(seed=4, fov_mm=(None, None, 45.0), slab_offset_mm=10.0, n_cmbs=10)
    img = nib.Nifti1Image(ph.magnitude[..., 0], ph.affine)
    res = reg.register_template_to_subject(
        img, tmp_path, head_mask=nib.Nifti1Image(ph.head_mask.astype(np.uint8), ph.affine),
        resolution_mm=3.0, seed=0, n_threads=2,
    )  # fmt: skip
    atlas, lut = lobes.load_atlas()
    mask = nib.Nifti1Image(ph.brain_mask.astype(np.uint8), ph.affine)
    dseg, coverage, not_covered = lobes.label_subject(
        mask, atlas, lut, res.template_to_subject_xfm, res.subject_to_template_xfm
    )
    assert "cerebellum_left" in not_covered and "brainstem_right" in not_covered
    assert len(not_covered) < len(lut)
    assert max(coverage.values()) > 0.5
    n_eligible, accuracy = _placement_accuracy(ph, dseg, lut, atlas)
    if n_eligible:
        assert accuracy >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_cmb_regions_many_seeds(tmp_path, seed):
    ph = _phantom(seed=seed, deformation_mm=4.0)
    img = nib.Nifti1Image(ph.magnitude[..., 0], ph.affine)
    res = reg.register_template_to_subject(img, tmp_path, resolution_mm=2.0, seed=0, n_threads=2)
    assert res.qc["registration_ok"], res.qc
    atlas, lut = lobes.load_atlas()
    from cmbprep.algorithms.brain import extract_brain

    mask, _ = extract_brain(img, res.template_to_subject_xfm)
    assert dice(np.asarray(mask.dataobj) > 0, ph.brain_mask) >= 0.95
    dseg, _, _ = lobes.label_subject(
        mask, atlas, lut, res.template_to_subject_xfm, res.subject_to_template_xfm
    )
    n_eligible, accuracy = _placement_accuracy(ph, dseg, lut, atlas)
    assert n_eligible >= 5 and accuracy >= 0.95


@pytest.mark.slow
def test_t1w_path_through_interface(tmp_path):
    """With a T1w, the interface aligns it rigidly to the SWI and registers the template."""
    from cmbprep.interfaces.anatomical import AnatomicalLabels, RegisterTemplate

    ph = _phantom(seed=6, include_t1w=True, n_cmbs=10)
    mag, head = _write(ph, tmp_path / "in")
    t1w = tmp_path / "in" / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(ph.t1w.astype(np.float32), ph.t1w_affine), t1w)
    os.chdir(tmp_path)
    reg_res = RegisterTemplate(
        magnitude=str(mag), head_mask=str(head), t1w=str(t1w), resolution_mm=2.0, n_threads=2
    ).run()
    assert reg_res.outputs.registration_qc["registration_image"] == "t1w_rigidly_aligned_to_swi"
    lab = AnatomicalLabels(
        magnitude=str(mag),
        head_mask=str(head),
        template_to_swi_xfm=reg_res.outputs.template_to_swi_xfm,
        swi_to_template_xfm=reg_res.outputs.swi_to_template_xfm,
        registration_qc=reg_res.outputs.registration_qc,
    ).run()
    assert lab.outputs.anat_meta["registration_ok"]
    mask = np.asarray(nib.load(lab.outputs.brain_mask).dataobj) > 0
    assert dice(mask, ph.brain_mask) >= 0.95
