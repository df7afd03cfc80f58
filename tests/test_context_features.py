"""Context features of a candidate (cmbprep/algorithms/detection/context.py): vessel
continuation, vesselness, sphere/cylinder phase fits, on small synthetic arrays."""

import numpy as np
import pytest

from cmbprep.algorithms.detection.context import (
    CONTEXT_FEATURES,
    PHASE_CONTEXT_FEATURES,
    context_features,
    cylinder_template,
    dipole_template,
)

B0 = np.array([0.0, 0.0, 1.0])
ANISOTROPIC = [(0.5, 0.5, 1.0), (0.9, 0.9, 2.0)]
# cylinder axes: along B0 (through the slice), 45 degrees, perpendicular (in-plane)
AXES = {"0deg": (0, 0, 1), "45deg": (1, 0, 1), "90deg_x": (1, 0, 0), "90deg_y": (0, 1, 0)}


def _grid(voxel_size, extent_mm=12.0, supersample=1):
    """Voxel-centre offsets (mm) from the centre voxel; with ``supersample`` > 1 an
    extra axis of sub-voxel points (for partial-volume averaging)."""
    shape = tuple(int(round(2 * extent_mm / v)) + 1 for v in voxel_size)
    centre = (np.array(shape) - 1) / 2.0
    axes = [(np.arange(n) - c) * v for n, c, v in zip(shape, centre, voxel_size)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    if supersample > 1:
        sub = (np.arange(supersample) + 0.5) / supersample - 0.5
        subs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
        points = points[..., None, :] + subs * np.asarray(voxel_size)
    return points, centre


def _soft(distance, radius):
    return 1.0 / (1.0 + np.exp((distance - radius) / 0.15))


def _distance_to_line(points, axis, through=(0.0, 0.0, 0.0)):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    rel = points - np.asarray(through, float)
    return np.linalg.norm(rel - (rel @ a)[..., None] * a, axis=-1)


def _noisy(image, noise, seed):
    rng = np.random.default_rng(seed)
    return (image + rng.normal(0.0, noise, image.shape)).astype(np.float32)


def sphere_image(voxel_size, radius=1.0, depth=0.8, noise=0.02, seed=0):
    """Dark sphere, partial-volume averaged into the voxels, plus noise."""
    fine, centre = _grid(voxel_size, supersample=4)
    image = 1.0 - depth * _soft(np.linalg.norm(fine, axis=-1), radius).mean(axis=-1)
    return _noisy(image, noise, seed), centre, _grid(voxel_size)[0]


def cylinder_image(voxel_size, axis, radius=0.8, depth=0.7, noise=0.02, seed=0):
    """Dark straight cylinder through the centre, partial-volume averaged, plus noise."""
    fine, centre = _grid(voxel_size, supersample=4)
    image = 1.0 - depth * _soft(_distance_to_line(fine, axis), radius).mean(axis=-1)
    return _noisy(image, noise, seed), centre, _grid(voxel_size)[0]


def _features(image, centre, voxel_size, radius, **kw):
    return context_features(image, centre, radius, voxel_size, 1.0, b0=kw.pop("b0", B0),
                            depth_fraction=0.25, **kw)


def _sphere_phase(points, b0, amplitude):
    off = points.reshape(-1, 3)
    r = np.linalg.norm(off, axis=1)
    safe = np.where(r[:, None] > 0.3, off, 0.3)  # the core is excluded by the fit
    return (amplitude * dipole_template(safe, b0)).reshape(points.shape[:-1])


def _cylinder_phase(points, b0, axis, radius, amplitude, through=(0.0, 0.0, 0.0)):
    off = points.reshape(-1, 3) - np.asarray(through, float)
    return (amplitude * cylinder_template(off, b0, axis, radius)).reshape(points.shape[:-1])


@pytest.mark.parametrize("voxel_size", [(0.5, 0.5, 1.0), (0.9, 0.9, 2.0), (1.0, 1.0, 1.0)])
def test_sphere_does_not_continue(voxel_size):
    image, centre, _ = sphere_image(voxel_size)
    f = _features(image, centre, voxel_size, 1.0)
    assert set(f) == set(CONTEXT_FEATURES)
    assert f["continuation_fraction"] == 0.0
    assert f["continuation_axiality"] < 0.15
    assert 1.5 <= f["tube_length_mm"] <= 3.5  # about the apparent diameter
    assert f["vesselness_max_shell"] < 0.35
    assert f["blob_vs_vessel"] > 1.0
    for name in PHASE_CONTEXT_FEATURES:  # no phase given
        assert np.isnan(f[name])


@pytest.mark.parametrize("voxel_size", ANISOTROPIC)
@pytest.mark.parametrize("axis", AXES.values(), ids=AXES.keys())
def test_cylinder_continues_along_one_axis(voxel_size, axis):
    image, centre, _ = cylinder_image(voxel_size, axis)
    f = _features(image, centre, voxel_size, 1.0)
    assert f["continuation_fraction"] >= 0.03  # two cones of ~10 degrees
    assert f["continuation_fraction"] <= 0.15
    assert f["continuation_axiality"] >= 0.55
    assert f["tube_length_mm"] >= 9.0  # capped at 10
    assert f["vesselness_max_shell"] > 0.6
    assert f["blob_vs_vessel"] < -0.3


def test_vessel_features_scale_with_physics_not_voxels():
    """The same cylinder sampled at two voxel sizes gives close features."""
    feats = []
    for vs in [(0.5, 0.5, 0.5), (1.0, 1.0, 2.0)]:
        image, centre, _ = cylinder_image(vs, (1, 0, 0), noise=0.0)
        feats.append(_features(image, centre, vs, 1.0))
    assert feats[0]["tube_length_mm"] == feats[1]["tube_length_mm"] == 10.0
    assert abs(feats[0]["continuation_axiality"] - feats[1]["continuation_axiality"]) < 0.15
    assert abs(feats[0]["vesselness_max_shell"] - feats[1]["vesselness_max_shell"]) < 0.15


@pytest.mark.parametrize("voxel_size", ANISOTROPIC)
@pytest.mark.parametrize("b0", [(0.0, 0.0, 1.0), (0.0, np.sin(0.4), np.cos(0.4))],
                         ids=["b0_z", "b0_oblique"])
def test_sphere_phase_fits_dipole_not_cylinder(voxel_size, b0):
    b0 = np.asarray(b0)
    image, centre, points = sphere_image(voxel_size)
    phase = _noisy(_sphere_phase(points, b0, 1.0), 0.005, 1)
    f = _features(image, centre, voxel_size, 1.0, b0=b0, phase=phase,
                  weight=np.clip(image, 0, 1.5), phase_sign=1)
    assert f["dipole_fit_r2"] > 0.8
    assert f["cylinder_fit_r2"] < 0.5
    assert f["dipole_vs_cylinder"] > 0.4
    assert f["dipole_amplitude_snr"] > 2.0


@pytest.mark.parametrize("voxel_size", ANISOTROPIC)
@pytest.mark.parametrize("axis", [AXES["45deg"], AXES["90deg_x"], AXES["90deg_y"]],
                         ids=["45deg", "90deg_x", "90deg_y"])
def test_cylinder_phase_fits_cylinder_not_dipole(voxel_size, axis):
    image, centre, points = cylinder_image(voxel_size, axis, radius=0.8)
    # field radius slightly off the grid so no voxel sits exactly on the boundary
    phase = _noisy(_cylinder_phase(points, B0, axis, 0.97, 1.0), 0.005, 2)
    f = _features(image, centre, voxel_size, 1.0, phase=phase,
                  weight=np.clip(image, 0, 1.5), phase_sign=1)
    assert f["cylinder_fit_r2"] > 0.8
    assert f["dipole_fit_r2"] < 0.5
    assert f["dipole_vs_cylinder"] < -0.4


def test_cylinder_along_b0_has_no_outside_field():
    """A vessel along B0 gives no field outside: neither model fits random phase."""
    vs = (0.5, 0.5, 1.0)
    image, centre, points = cylinder_image(vs, AXES["0deg"])
    phase = _noisy(np.zeros(points.shape[:-1]), 0.01, 3)
    f = _features(image, centre, vs, 1.0, phase=phase, weight=np.clip(image, 0, 1.5))
    assert f["dipole_fit_r2"] < 0.1 and f["cylinder_fit_r2"] < 0.1
    assert abs(f["dipole_amplitude_snr"]) < 1.0


@pytest.mark.parametrize("amplitude, phase_sign, expected", [
    (1.0, 1, 1), (-1.0, 1, -1), (-1.0, -1, 1), (1.0, -1, -1)])
def test_dipole_amplitude_sign(amplitude, phase_sign, expected):
    """Paramagnetic (positive susceptibility times the phase handedness) > 0,
    diamagnetic (calcification) < 0."""
    vs = (0.5, 0.5, 1.0)
    image, centre, points = sphere_image(vs)
    phase = _noisy(_sphere_phase(points, B0, amplitude), 0.005, 4)
    f = _features(image, centre, vs, 1.0, phase=phase, weight=np.clip(image, 0, 1.5),
                  phase_sign=phase_sign)
    assert np.sign(f["dipole_amplitude_snr"]) == expected
    assert abs(f["dipole_amplitude_snr"]) > 2.0
    assert f["dipole_fit_r2"] > 0.8
    # the field at the lesion radius (1 mm): |A| / R^3 = 1 rad, with the same sign
    assert np.sign(f["dipole_phase_at_radius"]) == expected
    assert abs(abs(f["dipole_phase_at_radius"]) - 1.0) < 0.1


@pytest.mark.parametrize("voxel_size", ANISOTROPIC)
def test_dipole_phase_at_radius_is_in_radians_whatever_the_voxel(voxel_size):
    """The same sphere's field (amplitude 0.3 rad mm^3, radius 1 mm) gives the same
    phase at its edge on every voxel grid; ten times weaker, ten times lower."""
    image, centre, points = sphere_image(voxel_size)
    values = []
    for amplitude in (0.3, 0.03):
        phase = _noisy(_sphere_phase(points, B0, amplitude), 0.0005, 7)
        f = _features(image, centre, voxel_size, 1.0, phase=phase,
                      weight=np.clip(image, 0, 1.5), phase_sign=1)
        values.append(f["dipole_phase_at_radius"])
    assert abs(values[0] - 0.3) < 0.03
    assert abs(values[1] - 0.03) < 0.005


@pytest.mark.parametrize("voxel_size", ANISOTROPIC)
@pytest.mark.parametrize("vein_offset", [1.5, 2.0], ids=["touching", "beside"])
def test_sphere_beside_vein(voxel_size, vein_offset):
    """A microbleed touching or beside an in-plane vein (perpendicular to B0, the
    strongest outside field): no continuation through the centre and a phase better
    fitted by the sphere's dipole than by a cylinder through it."""
    fine, centre = _grid(voxel_size, supersample=4)
    points = _grid(voxel_size)[0]
    vein_axis, vein_at = (0, 1, 0), (vein_offset, 0.0, 0.0)
    image = np.minimum(1.0 - 0.8 * _soft(np.linalg.norm(fine, axis=-1), 1.0),
                       1.0 - 0.5 * _soft(_distance_to_line(fine, vein_axis, vein_at),
                                         0.6)).mean(axis=-1)
    image = _noisy(image, 0.02, 5)
    # fields in ppm: sphere of radius 0.8 mm and 1.5 ppm, vein of 0.5 mm and 0.4 ppm
    phase = (_sphere_phase(points, B0, 1.5 * 0.8**3 / 3)
             + _cylinder_phase(points, B0, vein_axis, 0.5, 0.4, vein_at))
    phase = _noisy(phase, 0.002, 6)
    f = _features(image, centre, voxel_size, 1.0, phase=phase,
                  weight=np.clip(image, 0, 1.5), phase_sign=1)
    assert f["continuation_fraction"] < 0.03  # a vessel through it: >= 0.05
    assert f["tube_length_mm"] < 8.0  # the vein's width adds to the sphere's; a vessel: 10
    assert f["blob_vs_vessel"] > 1.0
    assert f["dipole_fit_r2"] > 0.4
    assert f["dipole_vs_cylinder"] > 0.05
    assert f["dipole_amplitude_snr"] > 0
    # the vein is in the shell: vesselness sees it (the sphere alone does not)
    assert f["vesselness_max_shell"] > 0.5


def test_features_defined_at_the_image_border_and_for_faint_spots():
    vs = (0.5, 0.5, 1.0)
    image, centre, _ = sphere_image(vs)
    corner = np.array([1.0, 1.0, 1.0])  # patch mostly outside the image
    f = _features(image, corner, vs, 1.0)
    assert all(np.isfinite(f[k]) for k in CONTEXT_FEATURES if k not in PHASE_CONTEXT_FEATURES)
    assert f["continuation_fraction"] == 0.0 and f["tube_length_mm"] == 0.0  # noise only
    flat = np.ones((30, 30, 20), np.float32)  # nothing dark at all
    f = _features(flat, (15.0, 15.0, 10.0), vs, 1.0, phase=np.zeros_like(flat),
                  weight=flat)
    assert f["continuation_fraction"] == 0.0 and f["tube_length_mm"] == 0.0
    assert all(np.isfinite(f[k]) for k in CONTEXT_FEATURES)


def test_detector_candidate_table_has_context_columns():
    """End to end on a physically simulated GRE (k-space dipole field, blooming): the
    microbleeds look like spheres, the vein like a vessel."""
    from cmbprep.algorithms.detection import detect_cmbprep

    from .test_detection import CMB_CENTRES, _mask, _voxel_of, simulate_gre

    spheres = [(c, 0.6, 1.0) for c in CMB_CENTRES]
    cylinders = [((20.0, 20.0, 12.0), (0.3, 0.2, 1.0), 0.5, 0.4),
                 ((15.0, 3.0, 6.0), (1.0, 0.1, 0.0), 0.5, 0.4)]
    mag, phase, affine = simulate_gre(spheres=spheres, cylinders=cylinders, seed=1)
    table = detect_cmbprep(mag, _mask(mag.shape), affine, filtered_phase=phase).candidates
    assert set(CONTEXT_FEATURES) <= set(table.columns)
    analysed = table[~table["screened_out"].astype(bool)]
    assert analysed[list(CONTEXT_FEATURES)].notna().all().all()
    assert table.loc[table["screened_out"].astype(bool), "tube_length_mm"].isna().all()
    # the candidates on the microbleeds, by position: this is the magnitude, not the
    # pipeline's SWI, so the classifier's status is not what is tested here
    centres = np.array([_voxel_of(affine, c) for c in CMB_CENTRES])
    ijk = analysed[["i", "j", "k"]].to_numpy(float)
    gap = np.linalg.norm((ijk[:, None] - centres[None]) * np.diag(affine)[:3], axis=-1)
    on_cmb = gap.min(axis=1) <= 1.5
    cmbs = analysed[on_cmb]
    assert len(cmbs) == len(CMB_CENTRES)
    assert (cmbs["continuation_fraction"] < 0.02).all()
    assert (cmbs["tube_length_mm"] < 5.0).all()
    assert (cmbs["blob_vs_vessel"] > 0).all()
    assert (cmbs["dipole_vs_cylinder"] > 0.1).all()
    assert (cmbs["dipole_amplitude_snr"] > 1.0).all()  # paramagnetic
    vessels = analysed[~on_cmb]
    assert len(vessels) >= 2
    assert (vessels["tube_length_mm"] >= 6.0).all()
    assert (vessels["blob_vs_vessel"] < 0).all()
    assert (vessels["dipole_vs_cylinder"] < 0).all()
    without = detect_cmbprep(mag, _mask(mag.shape), affine).candidates
    assert without[list(PHASE_CONTEXT_FEATURES)].isna().all().all()
    kept = without[~without["screened_out"].astype(bool)]
    assert kept[list(CONTEXT_FEATURES[:5])].notna().all().all()
