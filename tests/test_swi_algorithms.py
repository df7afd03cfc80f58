"""SWI pure functions on small generated arrays and on the real GRE crop (romeo-small).

romeo-small (tests/data/romeo-small, MIT, see its README/LICENSE): 51x51x41 voxels,
0.469x0.469x1 mm, 3 echoes; phase stored scaled (+-0.003674 <-> +-pi). Its echo times are
unknown; the upstream project treats them as 1:2:3, so these tests use 5/10/15 ms.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import pdist
from skimage.filters import frangi

from cmbprep.algorithms import swi as S
from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.mip import sliding_minip
from cmbprep.errors import DataError

ROMEO = Path(__file__).parent / "data" / "romeo-small"
ROMEO_TE = [0.005, 0.010, 0.015]


@pytest.fixture(scope="module")
def romeo():
    mag = nib.load(ROMEO / "Mag.nii.gz")
    phase = nib.load(ROMEO / "Phase.nii.gz")
    return (np.asarray(mag.dataobj, np.float32), np.asarray(phase.dataobj, np.float32),
            mag.affine)


@pytest.fixture(scope="module")
def romeo_swi(romeo):
    mag, phase, affine = romeo
    return S.process_swi(mag, phase, affine, input_kind="megre", echo_times=ROMEO_TE,
                         handedness="auto", n4_options={"iterations": [20, 20]})


# ----------------------------------------------------------------- phase scaling
def test_phase_to_radians_rules(romeo):
    _, phase, _ = romeo
    rad, how = S.phase_to_radians(phase, "arbitrary")
    assert rad.min() == pytest.approx(-np.pi, abs=1e-4)
    assert rad.max() == pytest.approx(np.pi, abs=1e-4)
    np.testing.assert_allclose(rad, phase / np.abs(phase).max() * np.pi, atol=1e-5)
    # unsigned 12-bit integers: 0..4095 <-> [-pi, pi)
    ints = np.array([0, 1024, 2048, 3072, 4095], dtype=np.float32)
    rad, _ = S.phase_to_radians(ints, None)
    np.testing.assert_allclose(rad, ints * 2 * np.pi / 4096 - np.pi, atol=1e-5)
    # radians are kept; [0, 2pi) is wrapped
    x = np.linspace(-np.pi, np.pi - 0.01, 50, dtype=np.float32)
    np.testing.assert_allclose(S.phase_to_radians(x, "rad")[0], x, atol=1e-6)
    np.testing.assert_allclose(S.phase_to_radians(x + np.pi, "rad")[0],
                               S.wrap_phase(x + np.pi), atol=1e-5)


def test_looks_like_phase_separates_phase_from_magnitude(romeo):
    mag, phase, _ = romeo
    assert S.looks_like_phase(phase)[0]
    ok, reason = S.looks_like_phase(mag)
    assert not ok and "magnitude-like" in reason
    assert not S.looks_like_phase(phase * 1000, "rad")[0]
    # stored scaled (+-0.0037) but labelled radians: refused
    ok, reason = S.looks_like_phase(phase, "rad")
    assert not ok and "arbitrary" in reason


# ------------------------------------------------------------------- unwrapping
def test_laplacian_unwrapping_recovers_smooth_phase_exactly():
    shape, voxel_size = (40, 36, 20), (0.5, 0.5, 1.0)
    grids = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_size)],
                        indexing="ij")
    truth = (0.6 * grids[0] - 0.4 * grids[1] + 0.02 * (grids[2] - 10) ** 2
             + 3 * np.sin(grids[0] / 6)).astype(np.float32)  # spans ~ +-12 rad
    wrapped = S.wrap_phase(truth)
    unwrapped = S.unwrap_phase_laplacian(wrapped, voxel_size)
    offset = unwrapped - truth
    # equal to the truth up to one global multiple of 2 pi
    assert np.ptp(offset) < 1e-3
    assert offset.mean() / (2 * np.pi) == pytest.approx(round(offset.mean() / (2 * np.pi)),
                                                        abs=1e-3)


def test_unwrapped_romeo_phase_differs_by_multiples_of_2pi(romeo):
    _, phase, affine = romeo
    rad, _ = S.phase_to_radians(phase)
    for echo in range(rad.shape[3]):
        wrapped = rad[..., echo]
        unwrapped = S.unwrap_phase_laplacian(wrapped, voxel_sizes(affine))
        cycles = (unwrapped - wrapped) / (2 * np.pi)
        np.testing.assert_allclose(cycles, np.round(cycles), atol=1e-4)
        if echo == 2:  # the last echo wraps: unwrapping must change many voxels
            assert np.mean(np.round(cycles) != np.median(np.round(cycles))) > 0.05
    # echoes aligned in time: later echoes' unwrapped phase grows roughly linearly
    mag = np.ones(rad.shape, np.float32)
    aligned = S.unwrap_echoes(rad, mag, voxel_sizes(affine))
    cycles = (aligned - rad) / (2 * np.pi)
    np.testing.assert_allclose(cycles, np.round(cycles), atol=1e-4)
    step1 = np.median(aligned[..., 1] - aligned[..., 0])
    step2 = np.median(aligned[..., 2] - aligned[..., 1])
    assert abs(step1 - step2) < np.pi


def test_fit_frequency_recovers_linear_phase_with_offset():
    rng = np.random.default_rng(0)
    te = np.array([0.005, 0.011, 0.019])
    omega = rng.normal(0, 200, (6, 5, 4)).astype(np.float32)
    phi0 = rng.normal(0, 1, (6, 5, 4)).astype(np.float32)
    phase = phi0[..., None] + omega[..., None] * te.astype(np.float32)
    mag = rng.uniform(0.5, 1, phase.shape).astype(np.float32)
    np.testing.assert_allclose(S.fit_frequency(phase, mag, te), omega, rtol=1e-3, atol=0.05)


# ---------------------------------------------------------------- filtering/SWI
def test_homodyne_highpass_removes_background_keeps_local_phase():
    shape, voxel_size = (96, 96, 40), (0.5, 0.5, 1.0)
    grids = np.meshgrid(*[(np.arange(n) - n / 2) * v for n, v in zip(shape, voxel_size)],
                        indexing="ij")
    # background: steep linear ramps (wrap every few mm) and a gentle curvature
    background = 0.5 * grids[0] + 0.3 * grids[1] + 0.002 * grids[2] ** 2
    r2 = grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2
    local = -1.0 * np.exp(-r2 / (2 * 1.5 ** 2))  # 1.5 mm blob, -1 rad
    phase = S.wrap_phase((background + local).astype(np.float32))
    hp = S.homodyne_highpass(np.ones(shape, np.float32), phase, voxel_size, fwhm_mm=8.0)
    centre = r2 < 1.0
    # a ring 6-12 mm from the blob, >= 12 mm (3.5 sigma) from the volume edges
    far = (r2 > 6.0 ** 2) & (r2 < 12.0 ** 2) & (np.abs(grids[2]) < 3)
    assert hp[centre].mean() < -0.6          # local phase kept
    assert np.abs(hp[far]).max() < 0.15      # background removed (blob halo < 0.15)
    assert np.abs(phase[far]).max() > 3.0    # ... although it wrapped
    # kernel given in mm: the same physical filter on a finer grid gives the same result
    hp_no_blob = S.homodyne_highpass(np.ones(shape, np.float32),
                                     S.wrap_phase(background.astype(np.float32)),
                                     voxel_size, fwhm_mm=8.0)
    assert np.abs(hp_no_blob[far]).max() < 0.05


def test_phase_mask_and_swi_sign_convention():
    phase = np.array([-np.pi, -np.pi / 2, 0.0, np.pi / 2], np.float32)
    np.testing.assert_allclose(S.phase_mask(phase, "right"), [0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_allclose(S.phase_mask(phase, "left"), [1, 1, 1, 0.5], atol=1e-6)
    swi = S.compute_swi(np.full(4, 2.0), phase, handedness="right", power=2)
    np.testing.assert_allclose(swi, [0, 0.5, 2, 2], atol=1e-6)
    with pytest.raises(ValueError):
        S.phase_mask(phase, "auto")


# ------------------------------------------------------------------- real data
def _romeo_vein_mask(magnitude):
    """Vein mask of romeo-small: Frangi vesselness (dark ridges, sigma 1-2 voxels) of the
    combined magnitude, top 5 %; background = voxels > 2 voxels away from it."""
    vesselness = frangi(magnitude, sigmas=(1, 1.5, 2), black_ridges=True)
    vein = vesselness > np.percentile(vesselness, 95)
    background = ~ndimage.binary_dilation(vein, iterations=2)
    return vein, background


def _contrast(image, vein, background):
    bg = np.median(image[background])
    return (bg - np.median(image[vein])) / bg


def test_romeo_swi_has_higher_vein_contrast_than_magnitude(romeo, romeo_swi):
    mag, _, affine = romeo
    combined = S.combine_magnitude(mag)
    vein, background = _romeo_vein_mask(combined)
    c_mag = _contrast(romeo_swi["magnitude"], vein, background)
    c_swi = _contrast(romeo_swi["swi"], vein, background)
    assert c_mag > 0.05
    assert c_swi > c_mag + 0.005
    meta = romeo_swi["meta"]
    assert meta["Handedness"] in ("right", "left") and meta["HandednessRequested"] == "auto"
    assert romeo_swi["swi"].shape == mag.shape[:3]
    assert np.all(np.isfinite(romeo_swi["swi"]))
    # both conventions darken the veins compared with the magnitude
    for handedness in ("right", "left"):
        out = S.process_swi(mag, romeo[1], affine, input_kind="megre",
                            echo_times=ROMEO_TE, handedness=handedness,
                            bias_correct=False)
        assert _contrast(out["swi"], vein, background) > _contrast(
            out["magnitude"], vein, background)


def test_romeo_minip_shows_continuous_veins(romeo, romeo_swi):
    _, _, affine = romeo
    minip = sliding_minip(romeo_swi["swi"], affine, 8.0)
    assert np.all(minip <= romeo_swi["swi"])
    vs = voxel_sizes(affine)
    fov = np.asarray(minip.shape[:2]) * vs[:2]
    middle = minip.shape[2] // 2
    crossing = 0
    for z in range(middle - 4, middle + 5):  # the 9 slices within 4 mm of the centre
        vesselness = frangi(minip[:, :, z], sigmas=(1, 1.5, 2, 3), black_ridges=True)
        vein = vesselness > np.percentile(vesselness, 95)
        labels, _ = ndimage.label(vein, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        largest = np.argwhere(labels == np.argmax(sizes)) * vs[:2]
        # thin: its area is small compared with a filled disc of that length
        assert sizes.max() < 0.15 * vein.size
        crossing += pdist(largest).max() > 0.6 * fov.min()
    # in most of them one vein crosses (most of) the 24 mm field of view as a single
    # connected line (the largest component of Gaussian noise spans about 3 mm)
    assert crossing >= 5


# ------------------------------------------------------------------ input checks
def _write(path, data, affine=None):
    nib.Nifti1Image(np.asarray(data, np.float32),
                    np.diag([0.5, 0.5, 1.0, 1.0]) if affine is None else affine
                    ).to_filename(path)
    return str(path)


@pytest.fixture()
def small_gre(tmp_path):
    rng = np.random.default_rng(1)
    mag = rng.uniform(50, 100, (12, 10, 8)).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (12, 10, 8)).astype(np.float32)
    return tmp_path, _write(tmp_path / "mag.nii.gz", mag), _write(tmp_path / "ph.nii.gz", phase)


def test_check_inputs_accepts_good_data_and_warns_on_missing_te(small_gre):
    _, mag, phase = small_gre
    assert S.check_swi_inputs([mag], [phase], input_kind="gre",
                              echo_times=[0.02], phase_units="rad") == []
    warnings = S.check_swi_inputs([mag], [phase], input_kind="gre", echo_times=None)
    assert len(warnings) == 1 and "EchoTime" in warnings[0]
    assert S.check_swi_inputs([mag], [], input_kind="swi") == []
    S.check_swi_inputs([str(ROMEO / "Mag.nii.gz")], [str(ROMEO / "Phase.nii.gz")],
                       input_kind="megre", echo_times=ROMEO_TE, phase_units="arbitrary")


def test_check_inputs_rejects_bad_data(small_gre):
    tmp, mag, phase = small_gre
    rng = np.random.default_rng(2)
    cases = {
        "shape": dict(phase=[_write(tmp / "ph_shape.nii.gz",
                                    rng.uniform(-3, 3, (12, 10, 7)))]),
        "affine": dict(phase=[_write(tmp / "ph_aff.nii.gz", rng.uniform(-3, 3, (12, 10, 8)),
                                     np.diag([0.5, 0.5, 1.2, 1.0]))]),
        "zero": dict(magnitude=[_write(tmp / "zero.nii.gz", np.zeros((12, 10, 8)))]),
        "nan": dict(magnitude=[_write(tmp / "nan.nii.gz", np.full((12, 10, 8), np.nan))]),
        "megre one echo": dict(input_kind="megre"),
        "gre without phase": dict(phase=[]),
        "te in ms": dict(echo_times=[20.0]),
    }
    for name, override in cases.items():
        kwargs = dict(magnitude=[mag], phase=[phase], input_kind="gre", echo_times=[0.02])
        kwargs.update(override)
        with pytest.raises(DataError) as err:
            S.check_swi_inputs(kwargs.pop("magnitude"), kwargs.pop("phase"), **kwargs)
        message = str(err.value)
        assert "\n" not in message and ".nii.gz" in message, (name, message)
    # a magnitude image given as phase
    with pytest.raises(DataError, match="Mag.nii.gz: does not look like phase"):
        S.check_swi_inputs([str(ROMEO / "Mag.nii.gz")], [str(ROMEO / "Mag.nii.gz")],
                           input_kind="megre", echo_times=ROMEO_TE)
    # multi-echo phase without echo times
    with pytest.raises(DataError, match="EchoTime"):
        S.check_swi_inputs([str(ROMEO / "Mag.nii.gz")], [str(ROMEO / "Phase.nii.gz")],
                           input_kind="megre", echo_times=None)
    # a 4D magnitude with one echo where several were expected
    one_echo = _write(tmp / "one_echo.nii.gz", rng.uniform(1, 2, (12, 10, 8, 1)))
    with pytest.raises(DataError, match="one_echo.nii.gz"):
        S.check_swi_inputs([one_echo], [], input_kind="megre", echo_times=[0.01, 0.02])
    assert DataError.exit_code == 65


# ------------------------------------------------------ multi-echo: which echoes
def test_megre_longest_echo_is_the_single_echo_chain_on_that_echo(romeo):
    """``megre_echoes="longest"`` (the default) gives exactly what the single-echo chain
    gives on the echo with the longest TE, found by its TE, not its position; ``"fit"``
    is the RSS magnitude with the frequency fit; without phase the echoes stay combined."""
    mag, phase, affine = romeo
    kw = dict(affine=affine, phase_units="arbitrary", bias_correct=False)
    single = S.process_swi(mag[..., 2], phase[..., 2], input_kind="gre",
                           echo_times=[ROMEO_TE[2]], **kw)
    order = [2, 0, 1]  # the longest echo stored first
    longest = S.process_swi(mag[..., order], phase[..., order], input_kind="megre",
                            echo_times=[ROMEO_TE[i] for i in order], **kw)
    for name in ("swi", "magnitude", "filtered_phase", "head_mask"):
        np.testing.assert_array_equal(longest[name], single[name], err_msg=name)
    assert longest["meta"]["EchoUsed"]["Index"] == 0
    assert longest["meta"]["EchoUsed"]["EchoTime"] == ROMEO_TE[2]
    assert longest["meta"]["ReferenceEchoTime"] == ROMEO_TE[2]
    assert longest["meta"]["Handedness"] == single["meta"]["Handedness"]

    fit = S.process_swi(mag, phase, input_kind="megre", echo_times=ROMEO_TE,
                        megre_echoes="fit", **kw)
    assert "EchoUsed" not in fit["meta"] and fit["meta"]["MagnitudeCombination"] == "rss"
    assert fit["meta"]["ReferenceEchoTime"] == pytest.approx(np.mean(ROMEO_TE))
    np.testing.assert_allclose(fit["magnitude"], S.combine_magnitude(mag), rtol=1e-6)
    assert not np.array_equal(fit["swi"], longest["swi"])
    # no phase: nothing to fit, the echoes are combined (RSS) whatever megre_echoes says
    no_phase = S.process_swi(mag, None, input_kind="megre", echo_times=ROMEO_TE, **kw)
    assert "EchoUsed" not in no_phase["meta"]
    np.testing.assert_allclose(no_phase["swi"], S.combine_magnitude(mag), rtol=1e-6)

    assert S.longest_echo([0.02, 0.03, 0.01]) == 1
    from cmbprep.config import MEGRE_ECHOES  # the CLI's choices (--megre-echoes)

    assert MEGRE_ECHOES == S.MEGRE_ECHOES
    with pytest.raises(DataError, match="EchoTime"):
        S.longest_echo([0.02, None])
    with pytest.raises(ValueError, match="megre_echoes"):
        S.process_swi(mag, phase, input_kind="megre", echo_times=ROMEO_TE,
                      megre_echoes="first", **kw)
