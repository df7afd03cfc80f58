"""Tests of the phantom's domain-randomisation variants: vein models and anatomy variants
(brain scale, atrophy, enlarged ventricles).

Simulations use 2 mm voxels, brain only, no noise, fixed pose, and are shared through
module-scoped fixtures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cmbprep.testing.phantom import PhantomConfig, simulate_subject
from cmbprep.testing.phantom.anatomy import (
    template_maps,
    tissue_fractions,
    ventricle_growth_mm,
    ventricle_maps,
)
from cmbprep.testing.phantom.config import VEIN_MODELS
from cmbprep.testing.phantom.geometry import apply_affine
from cmbprep.testing.phantom.transforms import TemplateTransform
from cmbprep.testing.phantom.veins import cached_veins, resample_polyline

BASE = PhantomConfig.from_protocol(
    "small", voxel_size_mm=(2.0, 2.0, 2.0), include_head=False, noise_level=0.0,
    random_affine=False, n_cmbs=3, n_veins=30)
SEED = 4
NEW_MODELS = [m for m in VEIN_MODELS if m != "surface_walk"]


def _arrays(sub):
    return (sub.magnitude, sub.phase, sub.vein_fraction, sub.field_ppm, sub.brain_mask)


@pytest.fixture(scope="module")
def default_subject():
    return simulate_subject(BASE, seed=SEED)


@pytest.fixture(scope="module")
def model_subjects():
    return {m: simulate_subject(dataclasses.replace(BASE, vein_model=m), seed=SEED)
            for m in NEW_MODELS}


def _venous_volume_fraction(sub):
    return float(sub.vein_fraction[sub.brain_mask].mean())


def test_config_validates_new_fields():
    assert BASE.vein_model == "surface_walk"
    for bad in ({"vein_model": "spaghetti"}, {"atrophy": 1.5}, {"ventricle_scale": 0.5},
                {"brain_scale": 0.0}):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)


def test_default_equals_explicit_surface_walk(default_subject):
    explicit = simulate_subject(dataclasses.replace(BASE, vein_model="surface_walk"),
                                seed=SEED)
    for a, b in zip(_arrays(default_subject), _arrays(explicit)):
        np.testing.assert_array_equal(a, b)
    implicit = cached_veins(SEED, 30, (0.3, 1.0))
    explicit_veins = cached_veins(SEED, 30, (0.3, 1.0), "surface_walk")
    assert len(implicit) == len(explicit_veins)
    for (p, r), (q, s) in zip(implicit, explicit_veins):
        np.testing.assert_array_equal(p, q)
        assert r == s


@pytest.mark.parametrize("model", NEW_MODELS)
def test_vein_models_plausible_and_different(model, model_subjects, default_subject):
    sub = model_subjects[model]
    assert sub.vein_mask.any()
    frac = _venous_volume_fraction(sub)
    assert 0.0005 < frac < 0.03, frac  # default: ~0.2 %
    # the vessel network differs from the default one
    diff = np.abs(sub.vein_fraction - default_subject.vein_fraction)
    assert diff.max() > 0.1
    assert (diff > 0.02).sum() > 200
    veins = cached_veins(SEED, 30, (0.3, 1.0), model)
    radii = np.array([r for _, r in veins])
    assert len(veins) > 100  # many more vessels than the default ~50
    assert (radii < 0.3).sum() > 50  # thin vessels
    # beaded veins: stretches between beads are thinner (hardly visible); random
    # cylinders: calibre modulated down to 0.6 x 0.1 mm; converging: thin side branches
    assert radii.min() >= {"beaded": 0.04, "random_cylinders": 0.06,
                           "converging": 0.05}.get(model, 0.1)
    # centre lines lie inside the brain (large veins excepted)
    t = template_maps()
    pts = np.concatenate([p for p, r in veins if r < 0.9])
    vox = np.round(apply_affine(t["inv_affine"], pts)).astype(int)
    vox = np.clip(vox, 0, np.array(t["brain"].shape) - 1)
    assert t["brain"][tuple(vox.T)].mean() > 0.95


def test_vein_models_deterministic(model_subjects):
    model = "tortuous_segments"
    cached_veins.cache_clear()  # regenerate the centre lines from the seed
    again = simulate_subject(dataclasses.replace(BASE, vein_model=model), seed=SEED)
    for a, b in zip(_arrays(model_subjects[model]), _arrays(again)):
        np.testing.assert_array_equal(a, b)
    other = cached_veins(SEED + 1, 30, (0.3, 1.0), model)
    assert not np.array_equal(other[0][0], cached_veins(SEED, 30, (0.3, 1.0), model)[0][0])


def test_beaded_veins_are_compact_visible_pieces():
    """Thick pieces (beads, stubs) are short and run at every angle to B0; thin
    stretches join the beads of one vein end to end."""
    veins = cached_veins(SEED, 30, (0.3, 1.0), "beaded")
    small = [(p, r) for p, r in veins[:-3] if len(p) > 1]  # without the large veins
    length = np.array([np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p, _ in small])
    radius = np.array([r for _, r in small])
    thick = (radius >= 0.15) & (radius <= 0.7)
    assert thick.sum() > 150 and (radius < 0.11).sum() > 100
    # cortical veins (long, radius >= 0.65) aside, visible pieces are at most 5 mm long
    assert np.quantile(length[thick & (radius < 0.65)], 0.95) <= 5.0
    assert np.median(length[thick]) < 4.0
    near_z, near_xy = _angle_fractions([v for v, t in zip(small, thick) if t])
    assert near_z > 0.1 and near_xy > 0.3, (near_z, near_xy)
    # consecutive beads and thin stretches of a vein touch end to start
    joined = sum(np.allclose(a[-1], b[0]) for (a, _), (b, _) in zip(small, small[1:]))
    assert joined > 200


def _angle_fractions(veins):
    """Length fractions of vessel segments within 30 deg of z (B0) and of the xy plane."""
    segs = np.concatenate([np.diff(resample_polyline(p, 1.0), axis=0)
                           for p, r in veins if r < 0.9 and len(p) > 1])
    length = np.linalg.norm(segs, axis=1)
    cos_z = np.abs(segs[:, 2]) / np.maximum(length, 1e-9)
    near_z = length[cos_z > np.cos(np.deg2rad(30))].sum() / length.sum()
    near_xy = length[cos_z < np.sin(np.deg2rad(30))].sum() / length.sum()
    return near_z, near_xy


def test_dense_medullary_angles_and_lengths():
    veins = cached_veins(SEED, 30, (0.3, 1.0), "dense_medullary")
    near_z, near_xy = _angle_fractions(veins)
    assert near_z > 0.15 and near_xy > 0.15, (near_z, near_xy)
    thin = [p for p, r in veins if r <= 0.35]
    lengths = np.array([np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in thin])
    assert len(thin) >= 200
    assert np.median(lengths) < 25 and lengths.max() <= 30


def test_random_cylinders_are_straight_isotropic_and_modulated():
    """Directions uniform on the sphere: the length fraction within 30 deg of B0 is
    1 - cos 30 = 0.134, within 30 deg of the axial plane sin 30 = 0.5; the pieces of a
    vessel continue one straight line while the radius varies smoothly along it."""
    veins = cached_veins(SEED, 30, (0.3, 1.0), "random_cylinders")
    small = [(p, r) for p, r in veins[:-3] if r < 1.1]  # no cortical or large veins
    near_z, near_xy = _angle_fractions(small)
    assert 0.10 < near_z < 0.17 and 0.44 < near_xy < 0.56, (near_z, near_xy)
    radius = np.array([r for _, r in small])
    assert radius.min() >= 0.06 and radius.max() <= 1.05
    assert (radius < 0.2).sum() > 200 and (radius > 0.5).sum() > 100
    straight = joined = 0
    steps = []
    for (a, ra), (b, rb) in zip(small, small[1:]):
        if not np.allclose(a[-1], b[0]):
            continue  # the next vessel
        joined += 1
        da, db = a[-1] - a[0], b[-1] - b[0]
        straight += np.dot(da, db) / (np.linalg.norm(da) * np.linalg.norm(db)) > 0.999
        steps.append(abs(rb / ra - 1))
    assert joined > 1000 and straight == joined
    # sinusoidal modulation (amplitude <= 0.4, wavelength >= 3 mm): neighbouring 1 mm
    # pieces differ by at most 2 pi 0.4 / 3 / (1 - 0.4) = 1.4, mostly by much less
    assert max(steps) <= 1.4 and np.median(steps) < 0.15 and np.mean(steps) > 0.01


def test_converging_veins_meet_in_knots():
    """Medusa heads: 6-16 thin spokes and one thicker collector leave one point, spokes
    in every direction; confluences: 3-5 veins leave one point."""
    veins = cached_veins(SEED, 30, (0.3, 1.0), "converging")
    groups: dict = {}
    for p, r in veins[:-3]:  # without the large veins
        groups.setdefault(tuple(np.round(p[0], 6)), []).append((p, r))
    heads = [g for g in groups.values() if len(g) >= 7]
    knots = [g for g in groups.values() if 3 <= len(g) <= 5]
    assert len(heads) >= 5 and len(knots) >= 40, (len(heads), len(knots))
    for g in heads:
        radii = sorted(r for _, r in g)
        assert radii[-1] >= 0.3 and radii[-2] <= 0.3  # one collector, thin spokes
        d = np.array([(p[min(4, len(p) - 1)] - p[0]) / np.linalg.norm(
            p[min(4, len(p) - 1)] - p[0]) for p, r in g if r <= 0.3])
        assert (d @ d.T).min() < 0  # spokes arrive from opposite sides
    assert all(max(r for _, r in g) <= 0.75 for g in knots)


def test_tree_radii_follow_murray():
    veins = cached_veins(SEED, 30, (0.3, 1.0), "tree")
    radii = np.array([r for _, r in veins[:-3]])  # without the large veins
    assert radii.max() <= 0.75 and radii.min() >= 0.1
    # branches start where a parent segment ends: r_parent^3 = sum of daughters' r^3
    ends = {tuple(np.round(p[-1], 6)): r for p, r in veins[:-3]}
    daughters: dict = {}
    for p, r in veins[:-3]:
        key = tuple(np.round(p[0], 6))
        if key in ends:
            daughters.setdefault(key, []).append(r)
    assert len(daughters) > 20
    for key, rs in daughters.items():
        assert sum(r ** 3 for r in rs) <= ends[key] ** 3 * (1 + 1e-9)


def test_lesions_placed_with_new_models(model_subjects):
    for model, sub in model_subjects.items():
        assert len(sub.truth) == BASE.n_cmbs, model


def test_brain_scale_volume(default_subject):
    scaled = simulate_subject(dataclasses.replace(BASE, brain_scale=1.2), seed=SEED)
    ratio = scaled.brain_mask.sum() / default_subject.brain_mask.sum()
    assert abs(ratio / 1.2 ** 3 - 1) < 0.10, ratio
    # truth stays in template coordinates: mapping back gives the same mni point
    row = scaled.truth.iloc[0]
    mni = scaled.scanner_to_template(np.array([[row.x, row.y, row.z]]))[0]
    np.testing.assert_allclose(mni, [row.mni_x, row.mni_y, row.mni_z], atol=1e-6)
    centre = np.array([[0.0, -18.0, 8.0]])
    far = centre + [[0.0, 0.0, 40.0]]
    d = np.linalg.norm(scaled.template_to_scanner(far) - scaled.template_to_scanner(centre))
    assert d == pytest.approx(48.0)


@pytest.fixture(scope="module")
def fractions():
    """Tissue fractions on one 2 mm grid for the default, atrophic and enlarged-ventricle
    anatomy (same transform)."""
    xfm = TemplateTransform(np.eye(3), np.zeros(3))
    vox = 2.0
    lo = np.array([-76.0, -112.0, -74.0])
    shape = (77, 95, 81)
    affine = np.diag([vox, vox, vox, 1.0])
    affine[:3, 3] = lo
    out = {}
    for name, kw in {"default": {}, "atrophy": {"atrophy": 0.5},
                     "ventricles": {"ventricle_scale": 2.0}}.items():
        out[name] = tissue_fractions(xfm, affine, shape, (vox,) * 3, False, **kw)
    return out, affine


def _ventricle_distance(affine, shape):
    """Template distance to the ventricles (mm) at the grid voxels (nearest voxel)."""
    t = template_maps()
    vm = ventricle_maps()
    idx = np.indices(shape).reshape(3, -1).T
    vox = np.round(apply_affine(t["inv_affine"], apply_affine(affine, idx.astype(float))))
    vox = vox.astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(vm["dist"].shape)), axis=1)
    dist = np.full(len(idx), 1e3)
    dist[ok] = vm["dist"][tuple(vox[ok].T)]
    return dist.reshape(shape)


def test_atrophy_increases_csf(fractions):
    out, affine = fractions
    (f0, b0), (f1, b1) = out["default"], out["atrophy"]
    np.testing.assert_array_equal(b0, b1)  # same brain mask
    brain = b0 > 0.5
    csf0, csf1 = f0["csf"][brain].sum(), f1["csf"][brain].sum()
    gm0, gm1 = f0["gm"][brain].sum(), f1["gm"][brain].sum()
    assert csf1 > 1.3 * csf0
    assert gm1 < 0.9 * gm0
    # away from the ventricles (which also grow): sulci widen, white matter is kept
    far = brain & (_ventricle_distance(affine, b0.shape) > 12.0)
    assert f1["csf"][far].sum() > 1.3 * f0["csf"][far].sum()
    np.testing.assert_allclose(f1["wm"][far], f0["wm"][far])
    total0 = sum(f0[k] for k in ("gm", "wm", "csf", "deep_gm"))
    total1 = sum(f1[k] for k in ("gm", "wm", "csf", "deep_gm"))
    np.testing.assert_allclose(total1, total0, atol=1e-5)


def test_ventricle_scale_enlarges_ventricles(fractions):
    out, affine = fractions
    (f0, b0), (f2, _) = out["default"], out["ventricles"]
    vm = ventricle_maps()
    periventricular = _ventricle_distance(affine, b0.shape) < 12.0
    csf0 = f0["csf"][periventricular].sum()
    csf2 = f2["csf"][periventricular].sum()
    ventricles0 = vm["volume_mm3"] / 8.0  # in 2 mm voxels
    assert (csf2 - csf0) == pytest.approx(ventricles0, rel=0.35)  # volume doubled
    far = ~periventricular
    np.testing.assert_allclose(f2["csf"][far], f0["csf"][far])  # only near the ventricles


def test_lesions_avoid_enlarged_ventricles():
    cfg = dataclasses.replace(BASE, ventricle_scale=2.0, atrophy=0.3, n_cmbs=12,
                              min_lesion_spacing_mm=5.0, cmb_location_weights={"deep": 1.0})
    sub = simulate_subject(cfg, seed=SEED)  # without the check, several land in CSF
    assert len(sub.truth) >= 10
    vm = ventricle_maps()
    t = template_maps()
    mni = sub.truth[["mni_x", "mni_y", "mni_z"]].to_numpy()
    vox = np.round(apply_affine(t["inv_affine"], mni)).astype(int)
    grow = ventricle_growth_mm(2.0, 0.3)
    assert grow > 1.0
    assert np.all(vm["dist"][tuple(vox.T)] > grow + sub.truth["radius_mm"].to_numpy())
