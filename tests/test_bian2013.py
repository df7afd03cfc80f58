"""The ``bian2013`` reference detector (Bian et al. 2013; Morrison et al. 2018, issue 12):
each rule on arrays (a sphere passes, each mimic fails the rule meant for it), the
pieces the issue found broken (circularity, region growing, intensity scale, FRST
threshold, vessel mask, denoising), and false positives bounded on vein-only phantoms."""

import numpy as np
import pytest

from cmbprep.algorithms.detection import detect_bian2013
from cmbprep.algorithms.detection.bian2013 import (
    frst_vessel_mask,
    reference_response,
    rescale_255,
    rule_status,
)
from cmbprep.algorithms.detection.features import contour_circularity, slice_features
from cmbprep.algorithms.detection.frst import fast_radial_symmetry_slices
from cmbprep.algorithms.detection.parameters import BIAN2013_PARAMETERS
from cmbprep.algorithms.detection.segmentation import grow_region

P = dict(BIAN2013_PARAMETERS)
VOX = (0.5, 0.5, 1.0)  # slices along the third axis


# --- circularity -----------------------------------------------------------------------

def test_contour_circularity_tells_discs_from_lines_at_any_size():
    yy, xx = np.mgrid[:41, :41]
    for radius in (1.5, 3, 6, 12):
        disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= radius**2
        assert contour_circularity(disc) > 0.84, radius
    for n in (4, 6, 13):  # 13x1 scored 1.35 before, clipped to 1
        assert contour_circularity(np.ones((1, n))) < P["min_circularity"], n
    assert contour_circularity(np.ones((1, 13))) < 0.3
    assert contour_circularity(np.ones((2, 8))) < P["min_circularity"]
    assert contour_circularity(np.ones((2, 2))) > 0.9
    assert contour_circularity(np.ones((1, 1))) > P["min_circularity"]
    # physical pixels: 3x1 pixels of 0.5 x 1.5 mm form a 1.5 mm square
    assert contour_circularity(np.ones((3, 1)), (0.5, 1.5)) > 0.85
    # a ring (dark lesion with a brighter centre) is judged by its outline
    ring = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 36) & ((yy - 20) ** 2 + (xx - 20) ** 2 > 4)
    assert contour_circularity(ring) > 0.84
    assert np.isnan(contour_circularity(np.zeros((4, 4))))


def test_default_detector_circularity_is_unchanged():
    """The default detector's classifier was trained on scikit-image's estimate."""
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    box = tuple(slice(0, 3) for _ in range(3))
    assert slice_features(one, box, VOX, 2)["circularity"] == 1.0
    assert slice_features(one, box, VOX, 2, circularity="contour")["circularity"] < 1.0
    with pytest.raises(ValueError, match="circularity"):
        slice_features(one, box, VOX, 2, circularity="other")


# --- region growing ----------------------------------------------------------------------

def _tube_image(shape=(41, 41, 21), value=0.0, tissue=200.0):
    img = np.full(shape, tissue, np.float32)
    img[:, 19:22, 9:12] = value  # a dark vessel along the first axis
    return img


def test_seed_in_a_vessel_core_grows_along_the_vessel():
    img = _tube_image()
    seed = (20, 20, 10)
    region, _ = grow_region(img, seed, VOX, lower=0.0, upper=170.0, max_difference=60.0,
                            max_distance_mm=5.0, darker_joins=True)
    # the whole vessel inside the 5 mm window: 21 voxels of 0.5 mm along it
    assert np.any(region, axis=(1, 2)).sum() == 21
    # the former behaviour: a lower threshold of 10 kept the seed alone
    alone, _ = grow_region(img, seed, VOX, lower=10.0, upper=170.0, max_difference=60.0,
                           max_distance_mm=5.0)
    assert alone.sum() == 1


def test_growing_stops_at_tissue_and_far_brighter_voxels():
    img = _tube_image(value=100.0)
    img[20, 20, 10] = 30.0  # seed
    region, _ = grow_region(img, (20, 20, 10), VOX, lower=0.0, upper=170.0,
                            max_difference=60.0, max_distance_mm=5.0, darker_joins=True)
    assert region.sum() == 1  # 100 is more than 60 above the seed; tissue above 170
    img[20, 20, 10] = 60.0
    region, _ = grow_region(img, (20, 20, 10), VOX, lower=0.0, upper=170.0,
                            max_difference=60.0, max_distance_mm=5.0, darker_joins=True)
    assert np.any(region, axis=(1, 2)).sum() == 21


# --- the rules on binary shapes ------------------------------------------------------------

def _grid(shape=(61, 61, 31)):
    idx = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    return [(i - c) * v for i, c, v in zip(idx, centre, VOX)]


def _geom(region, cnr=20.0):
    box = tuple(slice(0, n) for n in region.shape)
    geom = slice_features(region, box, VOX, 2, circularity="contour")
    geom.update(contrast_to_noise=cnr, n_voxels=int(region.sum()),
                volume_mm3=float(region.sum() * np.prod(VOX)), pixel_mm=0.5)
    return geom


def _tube(direction, radius=0.6, half_length=5.0):
    x, y, z = _grid()
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    along = x * d[0] + y * d[1] + z * d[2]
    dist2 = x**2 + y**2 + z**2 - along**2
    return (dist2 <= radius**2) & (np.abs(along) <= half_length)


def test_sphere_passes_every_rule():
    x, y, z = _grid()
    for radius in (1.0, 1.5, 2.5, 4.0):
        sphere = x**2 + y**2 + z**2 <= radius**2
        assert rule_status(_geom(sphere), P)[:2] == ("cmb", "n/a"), radius
    # SWI stretches a microbleed along B0 (here the slice axis)
    ellipsoid = x**2 + y**2 + (z / 1.8) ** 2 <= 1.2**2
    assert rule_status(_geom(ellipsoid), P)[0] == "cmb"


def test_in_plane_vessel_fails_circularity():
    status, reason, _ = rule_status(_geom(_tube((1, 0, 0))), P)
    assert status == "rejected" and "circularity" in reason.split("+")


def test_vessel_through_the_slices_fails_the_n_slices_rule():
    status, reason, _ = rule_status(_geom(_tube((0, 0, 1))), P)
    assert status == "rejected" and reason == "n_slices"


def test_oblique_vessel_travels():
    status, reason, category = rule_status(_geom(_tube((1, 0, 1))), P)
    assert status == "rejected" and "travel" in reason.split("+")
    assert category == "travelling"


def test_slightly_travelling_lesion_is_left_for_review():
    x, y, z = _grid()
    sheared = (x - 0.6 * z) ** 2 + y**2 + z**2 <= 1.5**2  # 0.6 mm per 1 mm slice
    status, reason, category = rule_status(_geom(sheared), P)
    assert (status, reason, category) == ("review", "centroid_shift", "travelling")


def test_large_dark_structure_fails_the_area_rule():
    x, y, z = _grid()
    blob = x**2 + y**2 + (z / 3) ** 2 <= 5.5**2  # 11 mm across: not a microbleed
    status, reason, _ = rule_status(_geom(blob), P)
    assert status == "rejected" and "area" in reason.split("+")


def test_denoising_removes_single_voxels_and_faint_spots():
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    assert rule_status(_geom(one), P)[:2] == ("rejected", "noise")
    x, y, z = _grid()
    sphere = x**2 + y**2 + z**2 <= 1.5**2
    assert rule_status(_geom(sphere, cnr=3.0), P)[:2] == ("rejected", "noise")
    flat = np.zeros((5, 5, 5), bool)
    flat[2, 2, 2] = True
    assert rule_status(_geom(flat), P)[2] == "single_slice"


# --- intensity scale, FRST threshold and vessel mask --------------------------------------

def test_swi_and_minip_share_one_intensity_scale():
    rng = np.random.default_rng(0)
    swi = rng.uniform(500, 1500, (20, 20, 12)).astype(np.float32)
    minip = np.minimum.accumulate(swi, axis=2)  # any image of minima of the SWI
    brain = np.ones(swi.shape, bool)
    swi255, minip255, factor = rescale_255(swi, minip, brain, 200.0)
    assert np.median(swi255) == pytest.approx(200.0, rel=1e-4)
    np.testing.assert_allclose(minip255, np.minimum.accumulate(swi255, axis=2), rtol=1e-6)
    assert factor == pytest.approx(200.0 / np.median(swi))


def _disc_volume(diameter_mm, depth, pixel=0.5, n=61, slices=3):
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    disc = ((yy - c) ** 2 + (xx - c) ** 2) * pixel**2 <= (diameter_mm / 2) ** 2
    img = np.full((n, n, slices), 200.0)
    img[disc] = 200.0 - depth
    return img


def test_seed_threshold_is_the_response_of_a_faint_small_disc():
    radii = [r / 0.5 for r in P["frst_radii_mm"]]
    ref = reference_response(radii, (0.5, 0.5), P)
    assert ref > 0
    f = lambda img: fast_radial_symmetry_slices(img, radii, alpha=3, combine="max")
    c = 30
    assert f(_disc_volume(3.0, 120))[c, c, 1] > ref  # a clear 3 mm microbleed
    assert f(_disc_volume(2.0, 15))[c, c, 1] < ref  # 2 mm, 15 units below tissue: noise
    # several radii: a 4 mm lesion too (one radius of 1.5 mm gave it no central peak)
    assert f(_disc_volume(4.0, 120))[c, c, 1] > ref


def test_vessel_mask_covers_elongated_frst_traces_not_compact_peaks():
    """The stage's logic on a response map: a long trace of votes above the cut (what a
    curved or beaded vessel leaves) is masked, a compact peak (a microbleed) and a small
    elongated trace below ``vessel_min_area_mm2`` are not. (Straight thin vessels give
    almost no FRST response at alpha = 3; the shape rules reject those.)"""
    frst = np.zeros((81, 81, 3))
    frst[10:70, 19:22, 1] = 10.0  # trace 30 x 1.5 mm
    yy, xx = np.mgrid[:81, :81]
    frst[(yy - 40) ** 2 + (xx - 60) ** 2 <= 9, 1] = 10.0  # 3 mm peak, 7 mm^2
    frst[70:75, 60, 1] = 10.0  # 2.5 x 0.5 mm trace: 1.25 mm^2
    mask = frst_vessel_mask(frst, 5.0, 2, (0.5, 0.5), P)
    assert mask[10:70, 19:22, 1].all()
    assert not mask[37:44, 57:64, 1].any()
    assert not mask[70:75, 60, 1].any()
    assert not mask[:, :, (0, 2)].any()  # slice by slice
    # the slice axis is respected: the same trace across the first axis
    moved = np.moveaxis(frst, 2, 0)
    assert frst_vessel_mask(moved, 5.0, 0, (0.5, 0.5), P)[1, 10:70, 19:22].all()


# --- the detector ---------------------------------------------------------------------

def _block(seed=0):
    """Tissue with noise, two microbleeds, a vessel in the slice plane and one across
    the slices (0.5 x 0.5 x 1 mm, slices along the third axis)."""
    rng = np.random.default_rng(seed)
    shape = (90, 90, 40)
    idx = np.indices(shape).astype(float)
    mm = [i * v for i, v in zip(idx, VOX)]
    swi = np.full(shape, 1000.0)

    def darken(mask_depth):
        np.minimum(swi, 1000.0 - 950.0 * mask_depth, out=swi)

    for centre, radius in (((12, 12, 20), 1.4), ((33, 12, 10), 2.2)):
        r = np.sqrt(sum((m - c) ** 2 for m, c in zip(mm, centre)))
        darken(np.clip(radius + 0.5 - r, 0, 1))
    # vessel along the first axis at y = 33 mm, z = 30 mm
    r = np.sqrt((mm[1] - 33) ** 2 + (mm[2] - 30) ** 2)
    darken(np.clip(0.9 - r, 0, 1))
    # vessel across the slices at x = 12, y = 33 mm
    r = np.sqrt((mm[0] - 12) ** 2 + (mm[1] - 33) ** 2)
    darken(np.clip(0.9 - r, 0, 1))
    swi += rng.normal(0, 15, shape)
    affine = np.diag([*VOX, 1.0])
    from cmbprep.algorithms.mip import sliding_minip

    return swi, sliding_minip(swi, affine), np.ones(shape, bool), affine


def test_detector_finds_microbleeds_and_no_vessel():
    swi, minip, brain, affine = _block()
    res = detect_bian2013(swi, minip, brain, affine)
    shown = res.candidates[res.candidates["status"].isin(["cmb", "review"])]
    xyz = shown[["i", "j", "k"]].to_numpy(float) * VOX
    for centre in ((12, 12, 20), (33, 12, 10)):
        assert (np.linalg.norm(xyz - centre, axis=1) < 1.5).sum() == 1, shown
    assert len(shown) == 2, shown
    found = shown.sort_values("k")
    # Morrison's automatic segmentation: volumes in the order of the lesions' sizes
    assert found["volume_mm3"].iloc[0] > found["volume_mm3"].iloc[1] > 4.0
    assert set(res.candidates["category"]) <= {"single_slice", "travelling", "possible"}
    for key in ("frst_radii_px", "noise_sigma_255", "n_seeds", "tissue_level"):
        assert key in res.parameters
    # same inputs, same outputs
    again = detect_bian2013(swi, minip, brain, affine)
    assert again.candidates.equals(res.candidates)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_detector_rejects_a_minip_of_another_shape():
    swi, minip, brain, affine = _block()
    with pytest.raises(ValueError, match="minIP shape"):
        detect_bian2013(swi, minip[:-1], brain, affine)


def _scene_result(angle, **overrides):
    from cmbprep.algorithms.mip import sliding_minip
    from cmbprep.algorithms.swi import process_swi
    from cmbprep.testing.scenes import vessel_scene

    scene = vessel_scene(angle, seed=200 + angle)
    out = process_swi(scene.magnitude, scene.phase, scene.affine, input_kind="gre",
                      echo_times=list(scene.echo_times_s), phase_units="rad",
                      handedness="left", n_threads=1)
    minip = sliding_minip(out["swi"], scene.affine)
    return detect_bian2013(out["swi"], minip, scene.brain, scene.affine,
                           parameters=overrides)


@pytest.mark.parametrize("angle", [0, 90])
def test_vein_only_phantom_leaves_nothing_for_the_rater(angle):
    """A physical vein (dipole field, dephasing, noise, the real SWI chain) through the
    slices (0 degrees to B0) or in the slice plane (90): no candidate is shown to the
    rater. Without the vessel mask, the FRST floor and the shape rules the same vein is
    shown, so the bound is what those stages do."""
    res = _scene_result(angle)
    shown = res.candidates["status"].isin(["cmb", "review"])
    assert shown.sum() == 0, res.candidates
    loose = _scene_result(angle, reference_fraction=0.0, vessel_min_area_mm2=1e9,
                          min_circularity=0.0, max_through_plane_ratio=1e9,
                          max_travel_radii=1e9, max_centroid_shift_mm=1e9,
                          min_contrast_to_noise=0.0, min_volume_mm3=0.0)
    assert loose.candidates["status"].isin(["cmb", "review"]).sum() >= 1


@pytest.mark.slow
def test_vein_only_phantom_brain_bounded_false_positives():
    """A whole phantom brain without lesions (veins, noise, bias): at most 50 candidates
    for the rater (the issue's budget; 21 when this test was written)."""
    import dataclasses

    from cmbprep.algorithms.mip import sliding_minip
    from cmbprep.algorithms.swi import process_swi
    from cmbprep.testing.phantom import PROTOCOLS, PhantomConfig, simulate_subject

    base = PROTOCOLS["small"]
    cfg = (PhantomConfig(**{**base, "n_cmbs": 0, "n_calcifications": 0})
           if isinstance(base, dict) else
           dataclasses.replace(base, n_cmbs=0, n_calcifications=0))
    ph = simulate_subject(cfg, seed=8)
    out = process_swi(ph.magnitude, ph.phase, ph.affine, input_kind="gre",
                      echo_times=list(ph.echo_times_s), phase_units="rad", n_threads=1)
    res = detect_bian2013(out["swi"], sliding_minip(out["swi"], ph.affine),
                          ph.brain_mask, ph.affine)
    shown = res.candidates["status"].isin(["cmb", "review"]).sum()
    assert shown <= 50
