"""Tests of the physics-based phantom (cmbprep.testing.phantom).

Simulations are small (1.5-2.5 mm voxels, brain only where the head is not needed) and
shared between tests through module-scoped fixtures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbprep.testing.phantom import (
    PROTOCOLS,
    PhantomConfig,
    dipole_kernel,
    field_from_susceptibility,
    simulate_subject,
    sphere_field_ppm,
    write_bids_dataset,
)

ECHOES = (0.010, 0.020, 0.030)

# Visible lesions, no noise: the magnitude/phase differences are due to the lesions only.
BASE = PhantomConfig.from_protocol(
    "small",
    voxel_size_mm=(2.0, 2.0, 2.0),
    echo_times_s=ECHOES,
    n_cmbs=4,
    n_calcifications=2,
    cmb_radius_mm=(0.7, 1.0),
    cmb_dchi_ppm=(1.5, 2.5),
    calcification_radius_mm=(0.8, 1.0),
    calcification_dchi_ppm=(-2.0, -1.5),
    noise_level=0.0,
    n_veins=8,
    include_head=False,
)
SEED = 7


@pytest.fixture(scope="module")
def pair_3t():
    lesions = simulate_subject(BASE, seed=SEED)
    reference = simulate_subject(dataclasses.replace(BASE, n_cmbs=0, n_calcifications=0),
                                 seed=SEED)
    return lesions, reference


@pytest.fixture(scope="module")
def pair_1p5t():
    cfg = dataclasses.replace(BASE, field_strength_t=1.5, phase_sign=-1, deformation_mm=2.0)
    lesions = simulate_subject(cfg, seed=SEED)
    reference = simulate_subject(dataclasses.replace(cfg, n_cmbs=0, n_calcifications=0),
                                 seed=SEED)
    return lesions, reference


def _lesion_box(sub, row, half_width_mm=12.0):
    centre = np.round([row.i, row.j, row.k]).astype(int)
    hw = [int(np.ceil(half_width_mm / v)) for v in sub.voxel_size]
    return tuple(slice(max(0, c - h), c + h + 1) for c, h in zip(centre, hw))


def _box_ratio(sub, ref, row, echo):
    """|with / without| near a lesion, NaN where the lesion-free signal is tiny (air)."""
    box = _lesion_box(sub, row)
    za = sub.magnitude[box + (echo,)] * np.exp(1j * sub.phase[box + (echo,)])
    zb = ref.magnitude[box + (echo,)] * np.exp(1j * ref.phase[box + (echo,)])
    ok = np.abs(zb) > 0.1 * np.median(ref.magnitude[..., echo][ref.brain_mask])
    return np.where(ok, np.abs(za) / np.where(ok, np.abs(zb), 1), np.nan)


def _dark_counts(sub, ref, row, echo, threshold=0.5):
    """Voxels near a lesion where the lesion lowers the magnitude below ``threshold``."""
    return int((_box_ratio(sub, ref, row, echo) < threshold).sum())


def _signal_deficit_mm3(sub, ref, row, echo):
    """Blooming volume: sum over voxels near the lesion of (1 - |with / without|)."""
    ratio = _box_ratio(sub, ref, row, echo)
    return float(np.nansum(1 - np.clip(ratio, 0, 1)) * np.prod(sub.voxel_size))


def test_protocol_presets():
    assert set(PROTOCOLS) >= {"small", "itp", "clinical", "iso1", "megre"}
    assert PROTOCOLS["itp"]["voxel_size_mm"] == (0.5, 0.5, 1.0)
    assert len(PROTOCOLS["megre"]["echo_times_s"]) == 3
    cfg = PhantomConfig.from_protocol("iso1", n_cmbs=2)
    assert cfg.echo_times_s == (0.015,) and cfg.n_cmbs == 2
    with pytest.raises(ValueError, match="unknown protocol"):
        PhantomConfig.from_protocol("nope")
    with pytest.raises(ValueError, match="phase_sign"):
        PhantomConfig(phase_sign=0)


def test_dipole_kernel_and_sphere_field_agree():
    """The k-space field of a voxelised sphere matches the analytic sphere field outside,
    also on an oblique grid (B0 not along an array axis)."""
    vox = (0.5, 0.5, 0.5)
    n = 64
    radius = 3.0
    angle = np.deg2rad(30)
    b0_dir = np.array([np.sin(angle), 0.0, np.cos(angle)])  # B0 in array axes
    grid = (np.indices((n, n, n)).reshape(3, -1).T - n / 2) * 0.5
    chi = (np.linalg.norm(grid, axis=1) <= radius).reshape(n, n, n).astype(np.float32)
    field = field_from_susceptibility(chi, vox, b0_dir, pad_mm=16.0).reshape(-1)
    # analytic: rotate the grid so that B0 is the z axis
    rot = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0],
                    [np.sin(angle), 0, np.cos(angle)]])
    analytic = sphere_field_ppm(grid @ rot.T, np.zeros(3), radius, 1.0)
    r = np.linalg.norm(grid, axis=1)
    shell = (r > 1.5 * radius) & (r < 3 * radius)
    err = np.abs(field[shell] - analytic[shell])
    assert np.median(err) < 0.1 * np.abs(analytic[shell]).max()
    assert np.corrcoef(field[shell], analytic[shell])[0, 1] > 0.95
    # along B0 the field is positive (paramagnetic), in the equatorial plane negative
    assert dipole_kernel((8, 8, 8), (1, 1, 1), (0, 0, 1))[0, 0, 0] == 0


def test_cmbs_are_dark_and_truth_voxel_is_local_minimum(pair_3t):
    sub, ref = pair_3t
    assert (sub.truth["kind"] == "cmb").sum() == 4
    mag = sub.magnitude[..., -1]
    ref_mag = ref.magnitude[..., -1]
    floor = 0.2 * np.median(ref_mag[ref.brain_mask])
    # lesion contrast: magnitude relative to the lesion-free image (outside the brain
    # there is only air in these head-less simulations)
    relative = np.where(ref_mag > floor, mag / np.maximum(ref_mag, floor), np.inf)
    for row in sub.truth.itertuples():
        ijk = np.round([row.i, row.j, row.k]).astype(int)
        # the darkest voxel of the 5x5x5 neighbourhood is the truth voxel or touches it
        hood = tuple(slice(c - 2, c + 3) for c in ijk)
        darkest = np.unravel_index(np.argmin(relative[hood]), relative[hood].shape)
        assert np.abs(np.array(darkest) - 2).max() <= 1, (row, darkest)
        # the truth voxel itself is much darker than without the lesion
        assert relative[tuple(ijk)] < 0.5, row
        # and darker than the brain around it
        assert mag[tuple(ijk)] < 0.5 * np.median(mag[hood][ref_mag[hood] > floor]), row
        # truth coordinates are consistent
        xyz = sub.affine[:3, :3] @ [row.i, row.j, row.k] + sub.affine[:3, 3]
        np.testing.assert_allclose(xyz, [row.x, row.y, row.z], atol=1e-3)
        mni = sub.scanner_to_template(np.array([[row.x, row.y, row.z]]))[0]
        np.testing.assert_allclose(mni, [row.mni_x, row.mni_y, row.mni_z], atol=1e-3)
        assert sub.brain_mask[tuple(ijk)]
    assert set(sub.truth["mars_category"]) <= {"lobar", "deep", "infratentorial"}
    assert (sub.truth["apparent_diameter_mm"] > 2 * sub.truth["radius_mm"]).all()


def test_blooming_grows_with_echo_time(pair_3t):
    sub, ref = pair_3t
    totals = []
    for row in sub.truth.itertuples():
        counts = [_dark_counts(sub, ref, row, e) for e in range(len(ECHOES))]
        deficit = [_signal_deficit_mm3(sub, ref, row, e) for e in range(len(ECHOES))]
        assert counts[2] >= 1, (row, counts)
        assert counts[0] <= counts[1] <= counts[2], (row, counts)
        totals.append(counts)
        # the volume grows faster than linearly with TE (dipole field ~ TE / r^3)
        assert deficit[0] * 1.3 < deficit[1] and deficit[1] * 1.2 < deficit[2], (row, deficit)
    totals = np.sum(totals, axis=0)
    assert totals[0] < totals[1] < totals[2], totals


def test_blooming_grows_with_field_strength(pair_3t, pair_1p5t):
    sub3, ref3 = pair_3t
    sub15, ref15 = pair_1p5t
    # same anatomy seed: same lesions (template coordinates, radius, dchi)
    cols = ["mni_x", "mni_y", "mni_z", "radius_mm", "dchi_ppm"]
    np.testing.assert_allclose(sub3.truth[cols].to_numpy(), sub15.truth[cols].to_numpy())
    totals = np.zeros(2)
    for r3, r15 in zip(sub3.truth.itertuples(), sub15.truth.itertuples()):
        d3 = _signal_deficit_mm3(sub3, ref3, r3, 1)
        d15 = _signal_deficit_mm3(sub15, ref15, r15, 1)
        # the dephased volume scales with B0; the sphere itself does not
        assert d3 > 1.2 * d15, (r3, d3, d15)
        totals += (d3, d15)
    assert totals[0] > 1.4 * totals[1], totals
    assert (sub3.truth["apparent_diameter_mm"].to_numpy()
            >= sub15.truth["apparent_diameter_mm"].to_numpy()).all()


def _dipole_signs(sub, ref, row, echo=-1, distance_mm=4.5):
    """Lesion phase (rad) at points along B0 (scanner z) and in the equatorial plane."""
    dphi = np.angle(np.exp(1j * (sub.phase[..., echo] - ref.phase[..., echo])))
    inv = np.linalg.inv(sub.affine)
    centre = np.array([row.x, row.y, row.z])
    axial = [centre + s * np.array([0, 0, distance_mm]) for s in (-1, 1)]
    equatorial = [centre + distance_mm * np.array(d) for d in
                  ([1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0])]

    floor = 0.2 * np.median(ref.magnitude[..., echo][ref.brain_mask])

    def mean_phase(points):
        vals = []
        for p in points:
            ijk = tuple(np.round(inv[:3, :3] @ p + inv[:3, 3]).astype(int))
            if ref.magnitude[ijk + (echo,)] > floor:  # skip points outside the head
                vals.append(dphi[ijk])
        assert vals, "no usable point"
        return np.mean(vals)

    return mean_phase(axial), mean_phase(equatorial)


def test_phase_dipole_pattern_and_calcification_sign(pair_3t, pair_1p5t):
    for (sub, ref), sign in ((pair_3t, 1), (pair_1p5t, -1)):
        assert sub.config.phase_sign == sign
        for row in sub.truth.itertuples():
            along, across = _dipole_signs(sub, ref, row)
            paramagnetic = 1 if row.kind == "cmb" else -1
            # positive field along B0, negative in the equatorial plane (paramagnetic)
            assert sign * paramagnetic * along > 0.03, (row, along, across)
            assert sign * paramagnetic * across < -0.01, (row, along, across)
    assert (pair_3t[0].truth.query("kind == 'calcification'")["dchi_ppm"] < 0).all()


def test_phase_is_wrapped(pair_3t):
    sub, _ = pair_3t
    phase = sub.phase
    assert phase.dtype == np.float32 and sub.magnitude.dtype == np.float32
    assert phase.shape == sub.magnitude.shape and phase.shape[-1] == len(ECHOES)
    assert phase.min() >= -np.pi and phase.max() < np.pi
    # the background field makes it wrap inside the brain
    brain_phase = phase[..., -1][sub.brain_mask]
    assert brain_phase.min() < -3.0 and brain_phase.max() > 3.0


def test_random_affine_and_transforms(pair_3t, pair_1p5t):
    a = pair_3t[0].affine
    b = simulate_subject(dataclasses.replace(BASE, n_cmbs=1, n_calcifications=0,
                                             n_veins=0, voxel_size_mm=(3.0, 3.0, 3.0)),
                         seed=SEED, acquisition_seed=SEED + 1).affine
    assert not np.allclose(a[:3, :3], b[:3, :3])
    # orthogonal axes with the requested voxel size; not stored as plain RAS
    np.testing.assert_allclose(np.sort(np.linalg.norm(a[:3, :3], axis=0)), [2.0] * 3)
    for aff in (a, b):
        cols = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
        np.testing.assert_allclose(cols.T @ cols, np.eye(3), atol=1e-9)
    # deformation: the maps are inverse and not rigid
    sub = pair_1p5t[0]
    rng = np.random.default_rng(0)
    mni = rng.uniform([-60, -90, -40], [60, 60, 70], size=(50, 3))
    scanner = sub.template_to_scanner(mni)
    np.testing.assert_allclose(sub.scanner_to_template(scanner), mni, atol=1e-3)
    xfm = sub._xfm
    rigid = mni @ xfm.rotation.T + xfm.translation
    shift = np.linalg.norm(scanner - rigid, axis=1)
    assert 0.2 < shift.max() <= 2.0 + 1e-6


def test_tissue_contrast_and_masks(pair_3t):
    sub, _ = pair_3t
    mag = sub.magnitude[..., 0]
    assert sub.brain_mask.sum() * np.prod(sub.voxel_size) > 1.2e6  # > 1.2 l of brain
    assert sub.vein_mask.any()
    # veins are darker than the brain around them
    assert np.median(mag[sub.vein_mask & sub.brain_mask]) < 0.8 * np.median(mag[sub.brain_mask])
    # magnitude decays with echo time in the brain
    means = [sub.magnitude[..., e][sub.brain_mask].mean() for e in range(len(ECHOES))]
    assert means[0] > means[1] > means[2]


def _hash_tree(root):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


FAST = {"voxel_size_mm": (2.5, 2.5, 2.5), "n_veins": 4, "cmb_radius_mm": (1.0, 1.4),
        "cmb_dchi_ppm": (1.5, 3.0)}


def test_bids_dataset_gre_pybids_and_determinism(tmp_path):
    from bids import BIDSLayout

    kwargs = {"n_subjects": 2, "seed": 3, "input_kind": "gre", "config_overrides": FAST,
                  "count_model": lambda row, rng: 2}
    root = write_bids_dataset(tmp_path / "a", **kwargs)
    again = write_bids_dataset(tmp_path / "b", **kwargs)
    assert _hash_tree(root) == _hash_tree(again)  # byte-identical

    layout = BIDSLayout(root, validate=False)
    mags = layout.get(suffix="T2starw", part="mag", extension=".nii.gz")
    phases = layout.get(suffix="T2starw", part="phase", extension=".nii.gz")
    assert len(mags) == 2 and len(phases) == 2
    for f in mags + phases:
        meta = f.get_metadata()
        assert meta["EchoTime"] == pytest.approx(0.020)
        assert meta["MagneticFieldStrength"] == 3.0
    assert phases[0].get_metadata()["Units"] == "rad"

    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(participants["group"]) == ["patient", "control"]
    assert {"participant_id", "age", "sex", "platelet_nadir"} <= set(participants)
    truth_dir = root / "derivatives" / "phantom-truth"
    assert json.loads((truth_dir / "dataset_description.json").read_text())[
        "DatasetType"] == "derivative"
    t1 = pd.read_csv(truth_dir / "sub-01/anat/sub-01_desc-truth_cmb.tsv", sep="\t")
    t2 = pd.read_csv(truth_dir / "sub-02/anat/sub-02_desc-truth_cmb.tsv", sep="\t")
    assert (t1["kind"] == "cmb").sum() == 2 and len(t2) == 0
    img = nib.load(root / "sub-01/anat/sub-01_part-mag_T2starw.nii.gz")
    mask = nib.load(truth_dir / "sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    np.testing.assert_allclose(img.affine, mask.affine)
    assert img.get_data_dtype() == np.float32
    # the truth voxel is dark in the written image
    data = img.get_fdata()
    brain = mask.get_fdata() > 0
    for row in t1.itertuples():
        ijk = np.round([row.i, row.j, row.k]).astype(int)
        hood = tuple(slice(c - 2, c + 3) for c in ijk)
        assert data[tuple(ijk)] < 0.6 * np.median(data[hood][brain[hood]]), row


def test_bids_megre_sessions_and_int16_phase(tmp_path):
    from bids import BIDSLayout

    root = write_bids_dataset(tmp_path / "me", n_subjects=1, n_controls=0, seed=1,
                              protocol="megre", input_kind="megre", sessions=2,
                              phase_units="arbitrary", config_overrides=FAST,
                              count_model=lambda row, rng: 1)
    layout = BIDSLayout(root, validate=False)
    files = layout.get(suffix="MEGRE", part="mag", extension=".nii.gz", session="01")
    assert len(files) == 3
    tes = sorted(f.get_metadata()["EchoTime"] for f in files)
    assert tes == pytest.approx(list(PROTOCOLS["megre"]["echo_times_s"]))
    ph = layout.get(suffix="MEGRE", part="phase", extension=".nii.gz", session="02", echo=2)
    assert len(ph) == 1 and ph[0].get_metadata()["Units"] == "arbitrary"
    img = nib.load(ph[0].path)
    assert img.get_data_dtype() == np.int16
    data = np.asarray(img.dataobj)
    assert data.min() >= -4096 and data.max() <= 4095 and data.max() > 3000
    # sessions: same lesion (template space), different pose
    tr = [pd.read_csv(root / f"derivatives/phantom-truth/sub-01/ses-{s}/anat/"
                      f"sub-01_ses-{s}_desc-truth_cmb.tsv", sep="\t") for s in ("01", "02")]
    np.testing.assert_allclose(tr[0][["mni_x", "mni_y", "mni_z"]],
                               tr[1][["mni_x", "mni_y", "mni_z"]], atol=1e-3)
    assert not np.allclose(tr[0][["x", "y", "z"]], tr[1][["x", "y", "z"]])


def test_bids_swi_and_magnitude_only(tmp_path):
    from bids import BIDSLayout

    root = write_bids_dataset(tmp_path / "swi", n_subjects=1, n_controls=0, seed=2,
                              input_kind="swi", config_overrides=FAST)
    assert "*_swi.nii.gz" in (root / ".bidsignore").read_text()
    layout = BIDSLayout(root, validate=False)
    swi = layout.get(suffix="swi", extension=".nii.gz")
    assert len(swi) == 1 and swi[0].get_metadata()["EchoTime"] == pytest.approx(0.02)
    assert (root / "sub-01/anat/sub-01_minIP.nii.gz").exists()
    assert not list(root.rglob("*part-phase*"))
    # SWI darkens the lesion at least as much as the magnitude would
    swi_img = nib.load(swi[0].path)
    data = swi_img.get_fdata()
    truth = pd.read_csv(root / "derivatives/phantom-truth/sub-01/anat/sub-01_desc-truth_cmb.tsv",
                        sep="\t")
    for row in truth.itertuples():
        ijk = np.round([row.i, row.j, row.k]).astype(int)
        hood = tuple(slice(c - 2, c + 3) for c in ijk)
        assert data[tuple(ijk)] < 0.6 * np.median(data[hood]), row

    mag_only = write_bids_dataset(tmp_path / "mag", n_subjects=1, n_controls=1, seed=2,
                                  input_kind="magnitude", include_t1w=True,
                                  config_overrides={**FAST, "t1w_voxel_size_mm": 2.0})
    layout = BIDSLayout(mag_only, validate=False)
    assert len(layout.get(suffix="T2starw", part="mag", extension=".nii.gz")) == 1
    assert not layout.get(part="phase")
    t1w = layout.get(suffix="T1w", extension=".nii.gz")
    assert len(t1w) == 1
    t1_img = nib.load(t1w[0].path)
    np.testing.assert_allclose(nib.affines.voxel_sizes(t1_img.affine), [2.0] * 3)
    t1 = t1_img.get_fdata()
    assert t1.max() > 500 and np.median(t1) < 0.2 * t1.max()  # head inside air


def test_cli_writes_dataset(tmp_path, capsys):
    from cmbprep.testing.phantom import main

    assert main([str(tmp_path / "cli"), "--n-subjects", "1", "--n-controls", "1",
                 "--seed", "4", "--protocol", "small", "--input-kind", "gre",
                 "--acq", "fast", "--voxel-size", "3"]) == 0
    assert str(tmp_path / "cli") in capsys.readouterr().out
    anat = tmp_path / "cli/sub-01/anat"
    assert (anat / "sub-01_acq-fast_part-mag_T2starw.nii.gz").exists()
    sidecar = json.loads((anat / "sub-01_acq-fast_part-phase_T2starw.json").read_text())
    assert sidecar["Units"] == "rad" and sidecar["EchoTime"] == pytest.approx(0.02)
    img = nib.load(anat / "sub-01_acq-fast_part-phase_T2starw.nii.gz")
    np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), [3.0] * 3)
    truth = pd.read_csv(tmp_path / "cli/derivatives/phantom-truth/sub-01/anat/"
                        "sub-01_acq-fast_desc-truth_cmb.tsv", sep="\t")
    assert len(truth) == 0  # a control


@pytest.mark.parametrize("module", ["cmbprep.testing.phantom", "cmbprep.testing"])
def test_module_entry_points(module):
    """``python -m`` runs the same command line for the package and ``cmbprep.testing``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("usage: python -m cmbprep.testing.phantom") and "--example" in out


@pytest.mark.slow
def test_itp_protocol_grid():
    """The high-resolution protocol: 0.5 x 0.5 x 1 mm, 360 x 440 x 150 voxels."""
    sub = simulate_subject(PhantomConfig.from_protocol("itp", n_cmbs=3), seed=0)
    order = np.argsort(np.argsort(sub.voxel_size))  # rank of each axis
    dims = dict(zip(np.round(sub.voxel_size, 3), sub.magnitude.shape[:3]))
    assert sorted(sub.magnitude.shape[:3]) == [150, 360, 440]
    assert dims[1.0] == 150 and order.max() == 2
    assert len(sub.truth) == 3 and (sub.truth["apparent_diameter_mm"] >= 0).all()


def test_slab_field_of_view():
    """A 30 mm slab along the slice axis: lesions all inside, grid cropped."""
    cfg = PhantomConfig.from_protocol("small", voxel_size_mm=(3.0, 3.0, 3.0),
                                      fov_mm=(None, None, 30.0), n_cmbs=3, n_veins=0,
                                      include_head=False, noise_level=0.0)
    sub = simulate_subject(cfg, seed=11)
    slice_axis = int(np.argmax(np.abs(sub.affine[2, :3]) / np.array(sub.voxel_size)))
    assert sub.magnitude.shape[slice_axis] == 10
    assert len(sub.truth) == 3
    ijk = sub.truth[["i", "j", "k"]].to_numpy()
    assert (ijk >= 0).all() and (ijk <= np.array(sub.magnitude.shape[:3]) - 1).all()


def test_write_subject_adds_participants_and_truth(tmp_path):
    from cmbprep.testing.phantom import write_subject

    for label, n_cmbs in (("a1", 2), ("c1", 0)):
        cfg = PhantomConfig.from_protocol("small", **dict(FAST, n_cmbs=n_cmbs))
        write_subject(simulate_subject(cfg, seed=9), tmp_path, label)
    parts = pd.read_csv(tmp_path / "participants.tsv", sep="\t")
    assert parts.to_dict("list") == {"participant_id": ["sub-a1", "sub-c1"],
                                     "group": ["patient", "control"]}
    for label in ("a1", "c1"):
        anat = tmp_path / f"sub-{label}" / "anat"
        assert (anat / f"sub-{label}_part-phase_T2starw.nii.gz").exists()
        truth = tmp_path / "derivatives" / "phantom-truth" / f"sub-{label}" / "anat"
        for name in ("desc-truth_cmb.tsv", "desc-truth_cmb.json", "desc-brain_mask.nii.gz",
                     "label-vein_mask.nii.gz"):
            assert (truth / f"sub-{label}_{name}").exists()
    table = pd.read_csv(truth.parent.parent / "sub-a1" / "anat" / "sub-a1_desc-truth_cmb.tsv",
                        sep="\t")
    assert (table["kind"] == "cmb").sum() == 2
    assert json.loads((tmp_path / "dataset_description.json").read_text())["DatasetType"] == "raw"


def test_source_fingerprint_covers_every_module(tmp_path, monkeypatch):
    """The cache key of simulated scans changes when any module of the package changes."""
    from pathlib import Path

    from cmbprep.testing import phantom

    fingerprint = phantom.source_fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert phantom.source_fingerprint() == fingerprint  # deterministic
    package = Path(phantom.__file__).parent
    copy = tmp_path / "phantom"
    copy.mkdir()
    for path in package.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(phantom, "__file__", str(copy / "__init__.py"))
    assert phantom.source_fingerprint() == fingerprint
    (copy / "veins.py").write_bytes((copy / "veins.py").read_bytes() + b"\n")
    assert phantom.source_fingerprint() != fingerprint
