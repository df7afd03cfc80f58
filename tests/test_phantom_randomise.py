"""Domain randomisation of the phantom: acquisition artefacts (Gibbs ringing, motion
blur), scanner SWI settings and :mod:`cmbprep.testing.phantom.randomise`. Tiny configs
(coarse voxels, thin slabs) keep it fast."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from cmbprep.testing.phantom import (
    FAMILIES,
    PhantomConfig,
    random_scan,
    simulate_scan,
    simulate_subject,
)
from cmbprep.testing.phantom.bids_files import scanner_swi
from cmbprep.testing.phantom.randomise import TE_B0_RANGE

# axis-aligned head (slice axis = array axis 2), no noise/bias/veins/lesions
TINY = dict(random_affine=False, noise_level=0.0, bias_strength=0.0, n_cmbs=0, n_veins=0,
            fov_mm=(None, None, 12.0))


def _sim(**kw):
    return simulate_subject(PhantomConfig.from_protocol("small", **{**TINY, **kw}), seed=1)


def _complex(ph):
    return ph.magnitude[..., 0].astype(np.complex128) * np.exp(1j * ph.phase[..., 0])


@pytest.fixture(scope="module")
def tiny():
    return {"ref": _sim(), "gibbs": _sim(gibbs_ringing=True),
            "motion": _sim(motion_blur_mm=0.5)}


def _outer_kspace_fraction(z, cut):
    """Fraction of the in-plane (axes 0, 1) k-space energy beyond ``cut`` cycles/voxel."""
    k = np.abs(np.fft.fftn(z, axes=(0, 1))) ** 2
    f0, f1 = (np.abs(np.fft.fftfreq(n)) for n in z.shape[:2])
    outer = (f0[:, None, None] > cut) | (f1[None, :, None] > cut)
    return float((k * outer).sum() / k.sum())


def test_defaults_unchanged():
    explicit = dict(gibbs_ringing=False, motion_blur_mm=0.0, scanner_swi_power=4,
                    scanner_swi_highpass_mm=4.0)
    cfg = dict(TINY, noise_level=0.03, bias_strength=0.2, random_affine=True)
    a = simulate_subject(PhantomConfig.from_protocol("small", **cfg), seed=2)
    b = simulate_subject(PhantomConfig.from_protocol("small", **cfg, **explicit), seed=2)
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    np.testing.assert_array_equal(a.phase, b.phase)


def test_gibbs_truncates_kspace_and_rings(tiny):
    ref, gib = _complex(tiny["ref"]), _complex(tiny["gibbs"])
    # sharp cut: nothing beyond 1/1.25 of the in-plane k-space half-width (0.4 cycles)
    assert _outer_kspace_fraction(gib, 0.4) < 1e-6
    assert _outer_kspace_fraction(ref, 0.4) > 1e-3
    # the k = 0 component (the image sum) is kept
    assert abs(gib.sum() - ref.sum()) < 1e-3 * abs(ref).sum()
    # ringing: in air (>= 2 voxels outside the head) the reference is exactly dark, the
    # truncated image oscillates (local maxima of the magnitude along the read axis)
    head = tiny["ref"].head_mask
    near = ndi.binary_dilation(head, np.ones((5, 5, 1), bool))
    air = ~near
    mag_ref, mag_gib = np.abs(ref), np.abs(gib)
    level = np.median(mag_ref[tiny["ref"].brain_mask])
    assert mag_ref[air].max() < 1e-3 * level
    assert np.mean(mag_gib[air]) > 2e-3 * level
    d = np.diff(mag_gib, axis=0)
    turns = (d[:-1] > 0) & (d[1:] < 0) & air[1:-1]  # local maxima in air
    assert turns.sum() > 0.05 * air[1:-1].sum()
    # overshoot at the head edge: just inside the head the truncated image exceeds the
    # reference on some voxels by more than 5 % of the tissue level
    edge = head & ~ndi.binary_erosion(head, np.ones((3, 3, 1), bool))
    assert np.max((mag_gib - mag_ref)[edge]) > 0.05 * level


def test_motion_blur_lowers_high_frequencies(tiny):
    ref, mot = _complex(tiny["ref"]), _complex(tiny["motion"])
    assert _outer_kspace_fraction(mot, 0.3) < 0.8 * _outer_kspace_fraction(ref, 0.3)
    # a blur, not a change of content: the low-frequency image is kept
    assert abs(mot.sum() - ref.sum()) < 0.02 * abs(ref).sum()
    assert not np.allclose(mot, ref)


def test_artefact_noise_is_white_and_added_after():
    """The noise realisation is the same with and without artefacts (added after)."""
    noisy = dict(noise_level=0.03)
    ref_n, ref_c = _complex(_sim(**noisy)), _complex(_sim())
    art = dict(gibbs_ringing=True, motion_blur_mm=0.3)
    art_n, art_c = _complex(_sim(**noisy, **art)), _complex(_sim(**art))
    scale = np.abs(ref_n - ref_c).std()
    assert scale > 0
    assert np.abs((art_n - art_c) - (ref_n - ref_c)).max() < 1e-2 * scale


def test_scanner_swi_settings_written(tmp_path):
    from cmbprep.testing.phantom import write_subject
    cfg = PhantomConfig.from_protocol("small", **TINY, scanner_swi_power=2,
                                      scanner_swi_highpass_mm=7.0)
    ph = simulate_subject(cfg, seed=1)
    write_subject(ph, tmp_path, "01", input_kind="swi")
    swi = nib.load(tmp_path / "sub-01" / "anat" / "sub-01_swi.nii.gz").get_fdata()
    want = scanner_swi(ph.magnitude[..., 0], ph.phase[..., 0], ph.voxel_size, 1, power=2,
                       sigma_mm=7.0)
    default = scanner_swi(ph.magnitude[..., 0], ph.phase[..., 0], ph.voxel_size, 1)
    np.testing.assert_allclose(swi, want, rtol=1e-5, atol=1e-3)
    assert np.abs(want - default).max() > 1.0


def test_family_draws_within_ranges():
    models = set()
    for name, fam in FAMILIES.items():
        kinds = set()
        for seed in range(50):
            spec = random_scan(name, seed)
            c = spec.config
            assert spec.family == name and spec.seed == seed
            assert c.vein_model == fam.vein_model and c.lesion_model == fam.lesion_model
            assert c.field_strength_t in fam.field_strengths_t
            for v in c.voxel_size_mm[:2]:
                assert fam.inplane_mm[0] <= v <= fam.inplane_mm[1]
            assert fam.slice_mm[0] <= c.voxel_size_mm[2] <= fam.slice_mm[1]
            te = max(c.echo_times_s)
            assert fam.te_ms[0] <= 1e3 * te <= fam.te_ms[1] + 1e-9
            assert TE_B0_RANGE[0] - 1e-9 <= te * c.field_strength_t <= TE_B0_RANGE[1] + 1e-9
            assert c.fov_mm[:2] == (None, None) and 30.0 <= c.fov_mm[2] <= 90.0
            assert 0.01 <= c.noise_level <= 0.05 and 0 <= c.motion_blur_mm <= 0.5
            assert 0 <= c.n_cmbs <= 14 and 0 <= c.n_calcifications <= 3
            lo, hi = fam.lesion_vein_clearance_mm
            assert lo <= c.lesion_vein_clearance_mm <= hi
            kinds.add(spec.input_kind)
            if spec.input_kind == "swi":
                assert 0 <= spec.swi_power <= 6 and 2.0 <= spec.swi_highpass_mm <= 8.0
                assert c.scanner_swi_power == spec.swi_power
                assert c.scanner_swi_highpass_mm == spec.swi_highpass_mm
            else:
                assert spec.swi_power is None
            n_echo = len(c.echo_times_s)
            assert (2 <= n_echo <= 4) if spec.input_kind == "megre" else n_echo == 1
        assert kinds == {"gre", "megre", "swi"}
        models.add((fam.vein_model, fam.lesion_model))
    assert len(models) == len(FAMILIES)  # each family its own vein or lesion model
    # deterministic per (family, seed); different across seeds and families
    assert random_scan("B", 5).to_dict() == random_scan("B", 5).to_dict()
    assert random_scan("B", 5).to_dict() != random_scan("B", 6).to_dict()
    assert random_scan("A", 5).sim_seed != random_scan("B", 5).sim_seed
    with pytest.raises(ValueError):
        random_scan("Z", 0)


def _tiny_spec(family, kind):
    """First spec of ``family`` with ``input_kind == kind``, shrunk to a tiny grid."""
    spec = next(s for s in (random_scan(family, i) for i in range(100))
                if s.input_kind == kind)
    cfg = dataclasses.replace(spec.config, voxel_size_mm=(2.5, 2.5, 2.5),
                              fov_mm=(None, None, 15.0), n_veins=4, n_cmbs=2,
                              gibbs_ringing=True, motion_blur_mm=0.3)
    return dataclasses.replace(spec, config=cfg)


@pytest.mark.parametrize("family, kind", [("A", "swi"), ("D", "megre")])
def test_simulate_scan_deterministic(family, kind):
    spec = _tiny_spec(family, kind)
    a, b = simulate_scan(spec), simulate_scan(spec)
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    assert a.input_kind == kind
    if kind == "swi":
        assert a.phase is None and a.magnitude.shape[-1] == 1
        ph = a.phantom
        want = scanner_swi(ph.magnitude[..., 0], ph.phase[..., 0], ph.voxel_size,
                           spec.config.phase_sign, power=spec.swi_power,
                           sigma_mm=spec.swi_highpass_mm)
        np.testing.assert_array_equal(a.magnitude[..., 0], want)
    else:
        np.testing.assert_array_equal(a.phase, b.phase)
        assert a.magnitude.shape[-1] == len(spec.config.echo_times_s) >= 2


def test_lesions_keep_their_vein_clearance():
    """Lesions sit at least their radius + ``lesion_vein_clearance_mm`` from every thick
    vein's centre line; the training families draw 2-4 mm (microbleeds beside veins), and
    the held-out family keeps the 4 mm its benchmark scans were made with."""
    from scipy.spatial import cKDTree

    from cmbprep.testing.phantom.lesions import place_lesions
    from cmbprep.testing.phantom.transforms import TemplateTransform

    assert FAMILIES["D"].lesion_vein_clearance_mm == (4.0, 4.0)
    assert random_scan("D", 1051).config.lesion_vein_clearance_mm == 4.0
    draws = [random_scan("A", s).config.lesion_vein_clearance_mm for s in range(40)]
    assert min(draws) < 2.5 and max(draws) > 3.5
    with pytest.raises(ValueError):
        PhantomConfig(lesion_vein_clearance_mm=1.0)
    # a grid of vein points 6 mm apart through the template brain
    g = np.arange(-70.0, 71.0, 6.0)
    veins = np.stack(np.meshgrid(g, g - 15.0, g[:-4] + 10.0, indexing="ij"), -1).reshape(-1, 3)
    nearest = {}
    for clearance in (2.0, 4.0):
        cfg = PhantomConfig(n_cmbs=12, n_calcifications=0, lesion_vein_clearance_mm=clearance,
                            min_lesion_spacing_mm=4.0)
        rows = place_lesions(cfg, np.random.default_rng(3), veins,
                             TemplateTransform(np.eye(3), np.zeros(3)), lambda p: True)
        d = cKDTree(veins).query(np.array([r["mni"] for r in rows]))[0]
        margin = d - np.array([r["radius_mm"] for r in rows])
        assert len(rows) >= 6 and margin.min() >= clearance - 1e-9
        nearest[clearance] = margin.min()
    assert nearest[2.0] < 3.0  # closer than the default clearance allows


def _grid_veins():
    """Vein points 6 mm apart through the template brain."""
    g = np.arange(-70.0, 71.0, 6.0)
    return np.stack(np.meshgrid(g, g - 15.0, g[:-4] + 10.0, indexing="ij"), -1).reshape(-1, 3)


def _place(seed, **kw):
    from cmbprep.testing.phantom.lesions import place_lesions
    from cmbprep.testing.phantom.transforms import TemplateTransform

    rng = np.random.default_rng(seed)
    rows = place_lesions(PhantomConfig(**kw), rng, _grid_veins(),
                         TemplateTransform(np.eye(3), np.zeros(3)), lambda p: True)
    return rows, rng


def _template_depth(points_mm):
    """Distance (mm) of template points to the edge of the 1 mm template brain mask."""
    from cmbprep.testing.phantom.anatomy import template_maps
    from cmbprep.testing.phantom.geometry import apply_affine

    t = template_maps()
    depth = ndi.distance_transform_edt(t["brain"] > 0.5)
    ijk = np.round(apply_affine(t["inv_affine"], np.asarray(points_mm))).astype(int)
    return depth[tuple(ijk.T)]


def test_juxtacortical_share_places_lobar_microbleeds_under_the_surface():
    """``juxtacortical_share=1`` puts every lobar microbleed 1-3.5 mm inside the brain
    mask's edge (still lobar, still clear of veins); 0 places lesions exactly as before the
    option existed (centres and the random stream after them pinned from that code), and
    the benchmark's families keep 0 while the learned ones draw 0.3-0.7."""
    from scipy.spatial import cKDTree

    kw = dict(n_cmbs=12, n_calcifications=0, lesion_vein_clearance_mm=2.0,
              min_lesion_spacing_mm=4.0, cmb_location_weights={"lobar": 1.0})
    off, _ = _place(3, **kw)
    on, _ = _place(3, **kw, juxtacortical_share=1.0)
    assert len(off) >= 8 and len(on) >= 8
    assert {r["mars_category"] for r in on} == {"lobar"}
    depth_on = _template_depth([r["mni"] for r in on])
    depth_off = _template_depth([r["mni"] for r in off])
    radius = np.array([r["radius_mm"] for r in on])
    assert np.all((depth_on >= np.maximum(radius, 1.0) - 0.5) & (depth_on <= 3.5 + 0.5))
    assert np.median(depth_off) > 6.0  # the lobar region reaches the surface only here and there
    margin = cKDTree(_grid_veins()).query(np.array([r["mni"] for r in on]))[0] - radius
    assert margin.min() >= 2.0 - 1e-9
    with pytest.raises(ValueError, match="juxtacortical_share"):
        PhantomConfig(juxtacortical_share=1.5)

    # share 0: what the generator placed before the option existed (commit 43e069f)
    rows, rng = _place(5, n_cmbs=6, n_calcifications=1, lesion_vein_clearance_mm=2.0,
                       min_lesion_spacing_mm=4.0)
    assert [(r["kind"], r["mars_category"]) for r in rows] == [
        ("cmb", "lobar"), ("cmb", "infratentorial"), ("cmb", "deep"), ("cmb", "deep"),
        ("cmb", "infratentorial"), ("cmb", "lobar"), ("calcification", "lobar")]
    np.testing.assert_allclose(rows[0]["mni"], [-25.455, -56.451, 57.499], atol=2e-3)
    np.testing.assert_allclose(rows[-1]["mni"], [16.877, -17.701, 60.694], atol=2e-3)
    assert rng.random() == pytest.approx(0.3904589137977216, abs=1e-12)

    for name, fam in FAMILIES.items():
        shares = [random_scan(name, s).config.juxtacortical_share for s in range(20)]
        if name in ("D", "G", "H"):
            assert fam.juxtacortical_share == (0.0, 0.0) and set(shares) == {0.0}
        else:
            assert 0.3 <= min(shares) and max(shares) <= 0.7 and max(shares) > min(shares)


def test_beside_vein_share_places_lesions_next_to_a_vein():
    """``beside_vein_share=1`` puts every lesion (microbleeds and calcifications) 1.2-3 mm
    beyond its radius from a vein's centre line (the drawn point moves up to 0.87 mm
    from its template voxel), where the ordinary clearance leaves them farther; the
    benchmark's families keep 0 while the learned ones draw 0.2-0.4."""
    from scipy.spatial import cKDTree

    from cmbprep.testing.phantom.lesions import BESIDE_VEIN_GAP_MM, place_lesions
    from cmbprep.testing.phantom.transforms import TemplateTransform

    x = np.arange(-70.0, 70.0, 0.5)
    veins = np.concatenate([np.stack([x, np.full_like(x, y), np.full_like(x, z)], 1)
                            for y, z in [(-40, 30), (0, 45), (30, 20), (-10, 0), (10, -20)]])
    kw = dict(n_cmbs=10, n_calcifications=3, lesion_vein_clearance_mm=2.0,
              min_lesion_spacing_mm=4.0)

    def margins(**extra):
        rows = place_lesions(PhantomConfig(**kw, **extra), np.random.default_rng(4), veins,
                             TemplateTransform(np.eye(3), np.zeros(3)), lambda p: True)
        d = cKDTree(veins).query(np.array([r["mni"] for r in rows]))[0]
        return d - np.array([r["radius_mm"] for r in rows]), rows

    beside, rows = margins(beside_vein_share=1.0)
    ordinary, _ = margins()
    assert len(beside) >= 11 and {r["kind"] for r in rows} == {"cmb", "calcification"}
    lo, hi = BESIDE_VEIN_GAP_MM
    assert beside.min() >= lo - 1e-9
    # one lesion, drawn into a category no vein crosses here, falls back to the rules
    assert (beside <= hi + 0.9).sum() >= len(beside) - 1
    assert ordinary.min() >= 2.0 - 1e-9 and (ordinary <= hi + 0.9).sum() <= 2
    with pytest.raises(ValueError, match="beside_vein_share"):
        PhantomConfig(beside_vein_share=-0.1)

    for name, fam in FAMILIES.items():
        shares = [random_scan(name, s).config.beside_vein_share for s in range(20)]
        if name in ("D", "G", "H"):
            assert fam.beside_vein_share == (0.0, 0.0) and set(shares) == {0.0}
        else:
            assert 0.2 <= min(shares) and max(shares) <= 0.4 and max(shares) > min(shares)


def test_lobulated_lesions_are_irregular_with_decaying_signal_inside():
    """A ``lobulated`` lesion (family H) is a sphere with overlapping lobes: its volume
    lies between the main sphere's and the lobes' extent, it is not round, and signal is
    left inside that falls with echo time; a ``sphere`` lesion is a void at every echo."""
    from types import SimpleNamespace

    from cmbprep.testing.phantom.lesions import _draw_lobes, lesion_signal
    from cmbprep.testing.phantom.transforms import TemplateTransform

    assert FAMILIES["H"].lesion_model == "lobulated"
    assert {f.lesion_model for k, f in FAMILIES.items() if k != "H"} == {"sphere"}
    assert FAMILIES["H"].vein_model == FAMILIES["D"].vein_model  # only the lesions differ
    with pytest.raises(ValueError, match="lesion_model"):
        PhantomConfig(lesion_model="cube")
    vox = 0.25
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = -8.0
    grid = SimpleNamespace(affine=affine, inv_affine=np.linalg.inv(affine),
                           voxel_size=(vox,) * 3, shape=(65, 65, 65))
    xfm = TemplateTransform(np.eye(3), np.zeros(3))
    tes = np.array([0.005, 0.020, 0.040])
    rng = np.random.default_rng(11)
    elongations = []
    for _ in range(6):
        lobes = _draw_lobes(rng, 1.2, 2.0)
        parts = lobes["parts"]
        assert 2 <= len(parts) <= 4 and np.all(parts[0][0] == 0)
        assert all(0.45 * 1.2 <= r <= 0.85 * 1.2 and 0.4 * 1.2 <= np.linalg.norm(o) <= 0.9 * 1.2
                   and 0.6 * 2.0 <= d <= 2.0 for o, r, d in parts[1:])
        lesion = {"kind": "cmb", "mni": np.zeros(3), "radius_mm": 1.2, "dchi_ppm": 2.0,
                  "mars_category": "lobar", **lobes}
        out = lesion_signal(lesion, xfm, np.zeros(grid.shape, np.float32), grid, tes, 3.0,
                            1, 0.1)
        truth = out.truth
        assert 1.2 < truth["radius_mm"] < lobes["extent_mm"]
        # signal left inside the main sphere (away from the lobes' fields), falling with TE
        box_start = np.array([s.start for s in out.box])
        centre = np.round(np.linalg.solve(affine[:3, :3], -affine[:3, 3])).astype(int)
        inside = np.abs(out.factor[(slice(None),) + tuple(centre - box_start)])
        assert inside[0] > inside[1] > inside[2] > 0
        r2star = lobes["interior_r2star_3t"]
        assert 100 <= r2star <= 500
        assert 0.5 * np.exp(-0.005 * r2star) < inside[0] <= np.exp(-0.005 * r2star) + 1e-6
        # shape: the union's points are not round (second moments differ by axis)
        pts = rng.uniform(-4, 4, (200_000, 3))
        within = np.zeros(len(pts), bool)
        for o, r, _ in parts:
            within |= np.linalg.norm(pts - o, axis=1) <= r
        evals = np.linalg.eigvalsh(np.cov(pts[within].T))
        elongations.append(np.sqrt(evals[-1] / evals[0]))
    assert max(elongations) > 1.3  # a sphere: 1.0
    sphere = {"kind": "cmb", "mni": np.zeros(3), "radius_mm": 1.2, "dchi_ppm": 2.0,
              "mars_category": "lobar"}
    out = lesion_signal(sphere, xfm, np.zeros(grid.shape, np.float32), grid, tes, 3.0, 1,
                        0.1)
    box_start = np.array([s.start for s in out.box])
    assert np.all(np.abs(out.factor[(slice(None),) + tuple(centre - box_start)]) == 0)
    assert out.truth["radius_mm"] == 1.2
