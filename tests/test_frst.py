"""Tests of the fast radial symmetry transform on synthetic discs and lines."""

import numpy as np
import pytest

from cmbprep.algorithms.detection.frst import fast_radial_symmetry, fast_radial_symmetry_slices


def _disc_image(shape, centres, radius, depth=0.6, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    img = np.ones(shape)
    for r0, c0 in centres:
        img[(rr - r0) ** 2 + (cc - c0) ** 2 <= radius**2] -= depth
    return img + noise * rng.standard_normal(shape)


def test_dark_discs_peak_at_centres():
    centres = [(20, 20), (20, 60), (55, 40)]
    img = _disc_image((80, 80), centres, radius=3, noise=0.02)
    resp = fast_radial_symmetry(img, 3, alpha=3)
    # The three strongest local maxima are the disc centres (within 1 pixel).
    from skimage.feature import peak_local_max

    peaks = peak_local_max(resp, min_distance=5, num_peaks=3)
    for r0, c0 in centres:
        dist = np.min(np.hypot(peaks[:, 0] - r0, peaks[:, 1] - c0))
        assert dist <= 1.0
    # The centre response dominates the background by a wide margin.
    background = np.percentile(resp, 50)
    assert resp[20, 20] > 20 * max(background, 1e-9)


def test_bright_disc_not_detected_in_dark_mode():
    img = 2.0 - _disc_image((60, 60), [(30, 30)], radius=3)  # bright disc
    dark = fast_radial_symmetry(img, 3, polarity="dark")
    bright = fast_radial_symmetry(img, 3, polarity="bright")
    assert bright[30, 30] > 10 * dark[30, 30]


def test_line_gives_weak_response_compared_with_disc():
    img = np.ones((80, 80))
    img[:, 38:43] = 0.4  # a dark vessel-like band 5 px wide
    img[60:67, 10:17] = 1.0
    rr, cc = np.mgrid[:80, :80]
    img[(rr - 15) ** 2 + (cc - 15) ** 2 <= 9] = 0.4  # a dark disc of radius 3
    resp = fast_radial_symmetry(img, 3, alpha=3)
    line_max = resp[10:70, 36:45].max()
    assert resp[15, 15] > 5 * line_max


def test_float_gradients_direction_exact_for_small_contrast():
    # Tiny contrasts (integer-cast gradients would be zero) still give a clear peak.
    img = _disc_image((40, 40), [(20, 20)], radius=3, depth=1e-3)
    resp = fast_radial_symmetry(img, 3)
    assert np.unravel_index(np.argmax(resp), resp.shape) == (20, 20)


def test_slices_matches_2d_and_axis():
    vol = np.ones((30, 40, 5))
    rr, cc = np.mgrid[:30, :40]
    vol[..., 2][(rr - 15) ** 2 + (cc - 20) ** 2 <= 9] = 0.3
    out = fast_radial_symmetry_slices(vol, 3, slice_axis=2)
    np.testing.assert_allclose(out[..., 2], fast_radial_symmetry(vol[..., 2], 3))
    assert out[..., 0].max() == 0
    moved = np.moveaxis(vol, 2, 0)
    out0 = fast_radial_symmetry_slices(moved, 3, slice_axis=0)
    np.testing.assert_allclose(np.moveaxis(out0, 0, 2), out)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        fast_radial_symmetry(np.ones((5, 5, 5)), 2)
    with pytest.raises(ValueError):
        fast_radial_symmetry(np.ones((5, 5)), 2, polarity="grey")


def test_combine_max_keeps_each_blob_at_its_own_radius():
    """``combine="max"``: a blob is not diluted by radii that do not fit it (several
    radii, as the bian2013 detector uses); the mean is Loy and Zelinsky's average."""
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64), 200.0)
    img[(yy - 32) ** 2 + (xx - 32) ** 2 <= 16] = 20.0  # radius 4 px
    single = fast_radial_symmetry(img, 4)
    mean = fast_radial_symmetry(img, [2, 4, 8])
    best = fast_radial_symmetry(img, [2, 4, 8], combine="max")
    assert best[32, 32] >= single[32, 32] - 1e-9
    assert best[32, 32] > 1.5 * mean[32, 32]
    assert np.unravel_index(np.argmax(best), best.shape) == (32, 32)
    np.testing.assert_allclose(fast_radial_symmetry(img, 4, combine="max"), single)
    with pytest.raises(ValueError, match="combine"):
        fast_radial_symmetry(img, 4, combine="sum")
