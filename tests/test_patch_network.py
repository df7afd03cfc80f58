"""The classifier's patch network: patches in mm along B0, the numpy forward pass, the
stack with the trees, through the detector, and its deterministic fit."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms.detection import (
    analyse_candidates,
    detect_cmbprep,
    find_candidates,
    merge_and_score,
)
from cmbprep.algorithms.detection.classifier import (
    NETWORK_COLUMN,
    calibrate,
    load_model,
    predict_proba,
)
from cmbprep.algorithms.detection.network import (
    decode_array,
    encode_array,
    export_mlp,
    network_probability,
    stack_logit,
)
from cmbprep.algorithms.detection.patches import (
    PATCH_POINTS,
    PATCH_STEP_MM,
    candidate_patches,
    patch_views,
)

from .test_detection import _mask, simulate_gre

N = PATCH_POINTS


def _blob_volume(voxel_size, order=(0, 1, 2), flip=(False, False, False)):
    """A dark ellipsoidal blob (sigma 1.2 mm across B0, 2.4 mm along it) at scanner
    (15, 15, 12) mm in a 30x30x24 mm block, stored on the grid ``voxel_size`` (scanner
    axes) with its array axes permuted by ``order`` and flipped by ``flip``; returns the
    image, its affine and the blob centre in voxel indices."""
    size = np.array([30.0, 30.0, 24.0])
    vs = np.asarray(voxel_size, float)
    shape = np.round(size / vs).astype(int)
    axes = [(np.arange(n) + 0.5) * v for n, v in zip(shape, vs)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    image = 1.0 - 0.8 * np.exp(-((x - 15) ** 2 + (y - 15) ** 2) / (2 * 1.2**2)
                               - (z - 12) ** 2 / (2 * 2.4**2))
    affine = np.diag([*vs, 1.0])
    affine[:3, 3] = vs / 2
    # permute and flip the storage; the affine follows so scanner positions are kept
    image = np.transpose(image, order)
    affine[:, :3] = affine[:, list(order)]
    for axis, f in enumerate(flip):
        if f:
            image = np.flip(image, axis)
            affine[:3, 3] += affine[:3, axis] * (image.shape[axis] - 1)
            affine[:3, axis] *= -1
    centre = np.linalg.solve(affine[:3, :3], np.array([15.0, 15.0, 12.0]) - affine[:3, 3])
    return np.ascontiguousarray(image, np.float32), affine, centre


def test_patches_are_the_same_in_mm_whatever_the_grid_and_storage_order():
    """One blob stored on two voxel grids and in two storage orders gives the same
    patch (within interpolation error), and its long axis (along B0) is the last."""
    patches = []
    for vs, order, flip in (((0.5, 0.5, 1.0), (0, 1, 2), (False, False, False)),
                            ((0.8, 0.8, 0.6), (2, 0, 1), (True, False, True))):
        image, affine, centre = _blob_volume(vs, order, flip)
        brain = np.ones(image.shape, bool)
        p = candidate_patches(image, None, brain, affine, centre[None])
        assert p.shape == (1, 2, N, N, N) and p.dtype == np.float32
        np.testing.assert_array_equal(p[0, 0], p[0, 1])  # no magnitude: the SWI twice
        patches.append(p[0, 0])
    first, second = patches
    assert first[N // 2, N // 2, N // 2] < -0.6  # dark at the centre
    assert np.abs(first - second).max() < 0.05
    # 2.1 mm from the centre, the blob is darker along B0 than across it
    step = int(round(2.1 / PATCH_STEP_MM))
    c = N // 2
    assert first[c, c, c + step] < first[c + step, c, c] - 0.2
    assert first[c, c, c + step] < first[c, c + step, c] - 0.2


def test_patch_views_keep_b0_the_last_axis():
    p = np.arange(2 * N**3, dtype=np.float32).reshape(1, 2, N, N, N)
    views = patch_views(p)
    assert len(views) == 4
    for v in views:
        # along B0 each view keeps the original's column (perhaps reversed)
        column = v[0, 0, 0, 0]
        assert np.ptp(np.diff(column)) == 0 and abs(np.diff(column)[0]) == 1


def small_network_fit():
    """A small MLP fitted on random patches (labels from the centre's darkness), and the
    patches."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (300, 2 * N**3)).astype(np.float32)
    y = x[:, (N**3) // 2] < 0
    net = MLPClassifier((8, 4), max_iter=50, random_state=0).fit(x, y)
    return net, x


@pytest.fixture(scope="module")
def small_network():
    return small_network_fit()


def test_numpy_forward_pass_matches_scikit_learn(small_network):
    net, x = small_network
    exported = json.loads(json.dumps(export_mlp(net)))
    patches = x.reshape(-1, 2, N, N, N)
    expected = np.mean([net.predict_proba(np.ascontiguousarray(v).reshape(len(x), -1))[:, 1]
                        for v in patch_views(patches)], axis=0)
    # float32 weights: the same to about 1e-6
    np.testing.assert_allclose(network_probability(patches, exported), expected, atol=1e-5)
    assert np.ptp(expected) > 0.2  # the check sees different outputs
    with pytest.raises(ValueError, match="patches"):
        network_probability(patches[:, :, :-1, :-1, :-1], exported)


def test_arrays_round_trip_as_float32():
    a = np.random.default_rng(1).normal(size=(3, 5))
    entry = json.loads(json.dumps(encode_array(a)))
    np.testing.assert_array_equal(decode_array(entry), a.astype(np.float32))


def _trees_only(model):
    """``model`` without a network (the trees and their own calibration)."""
    model = {k: v for k, v in model.items() if k != "network"}
    for part in ("phase", "no_phase"):
        model[part] = {k: v for k, v in model[part].items() if k != "stack"}
    return model


def _stacked(model, network, max_logit_shift=20.0):
    """``model`` with ``network`` and a stack calibration (slope 1.5, intercept -0.2); the
    default shift lets the network lead, so that its effect is seen."""
    model = copy.deepcopy(model)
    model["network"] = network
    for part in ("phase", "no_phase"):
        model[part]["stack"] = {"max_logit_shift": max_logit_shift,
                                "calibration": {"method": "logistic", "slope": 1.5,
                                                "intercept": -0.2}}
    return model


def test_load_model_checks_the_stack_and_the_network(small_network, tmp_path):
    """A stacked file must carry each part's ``max_logit_shift`` and a network this
    version can run; what is wrong is named when the file is loaded."""
    good = _stacked(load_model(), export_mlp(small_network[0]), max_logit_shift=1.0)

    def loads(model, name):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(model))
        return load_model(path)

    assert loads(good, "good")["phase"]["stack"]["max_logit_shift"] == 1.0
    old = copy.deepcopy(good)  # as written before detector 0.8.1
    del old["no_phase"]["stack"]["max_logit_shift"]
    with pytest.raises(ValueError, match="no_phase stack has no 'max_logit_shift'"):
        loads(old, "old")
    coarse = copy.deepcopy(good)
    coarse["network"]["patch_points"] = 9
    with pytest.raises(ValueError, match="expects 9-point patches"):
        loads(coarse, "coarse")
    cut = copy.deepcopy(good)
    cut["network"]["layers"] = cut["network"]["layers"][1:]
    with pytest.raises(ValueError, match="network layer 0 has weights"):
        loads(cut, "cut")
    unstacked = copy.deepcopy(good)
    del unstacked["phase"]["stack"]
    with pytest.raises(ValueError, match="phase has no 'stack' entry"):
        loads(unstacked, "unstacked")


def test_stacked_model_needs_and_uses_the_network(small_network):
    trees_only = _trees_only(load_model())
    model = _stacked(trees_only, export_mlp(small_network[0]))
    frame = pd.DataFrame({"contrast": [0.9, 0.5], "diameter_mm": [3.0, 2.0]})
    trees = predict_proba(frame, trees_only, use_phase=True)
    with pytest.raises(ValueError, match=NETWORK_COLUMN):
        predict_proba(frame, model, use_phase=True)
    net = np.array([0.9, 0.05])
    p = predict_proba(frame, model, use_phase=True, network_probability=net)
    expected = calibrate(1 / (1 + np.exp(-stack_logit(trees, net, 20.0))),
                         model["phase"]["stack"])
    np.testing.assert_allclose(p, expected)
    # a more confident network raises the score of the same candidate
    higher = predict_proba(frame, model, use_phase=True, network_probability=net + 0.04)
    assert np.all(higher > p)


def test_the_network_moves_the_trees_logit_by_at_most_the_shift():
    """A confident network (3e-9 against trees 0.81, the block scene's microbleed beside a
    vein) moves the trees' logit by the shift and no more; the shift 0 is the trees
    alone; a network that agrees within the shift gets its own logit."""
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    trees, net = np.array([0.81, 0.81, 0.3]), np.array([3e-9, 0.9, 0.35])
    np.testing.assert_allclose(stack_logit(trees, net, 0.5),
                               [logit(0.81) - 0.5, logit(0.81) + 0.5, logit(0.35)])
    np.testing.assert_allclose(stack_logit(trees, net, 0.0), logit(trees))
    assert stack_logit(trees, net, 20.0)[0] < logit(1e-5)


def test_detector_scores_with_the_network(tmp_path, small_network):
    """With a model that has a network the detector adds ``network_probability`` (the
    network on the candidate's patches; n/a when screened out) and scores with the
    stack; the staged run needs the images."""
    net, _ = small_network
    model = _stacked(load_model(), export_mlp(net))
    path = tmp_path / "stacked.json"
    path.write_text(json.dumps(model))
    spheres = [((12.0, 12.0, 10.0), 0.6, 1.0)]
    cylinders = [((20.0, 20.0, 12.0), (0.3, 0.2, 1.0), 0.5, 0.4)]
    mag, phase, affine = simulate_gre(spheres=spheres, cylinders=cylinders, seed=2)
    brain = _mask(mag.shape)
    result = detect_cmbprep(mag, brain, affine, filtered_phase=phase, magnitude=mag,
                            parameters={"model": str(path)})
    table = result.candidates
    kept = ~table["screened_out"].to_numpy(bool)
    assert kept.sum() >= 2
    assert table.loc[kept, NETWORK_COLUMN].notna().all()
    assert table.loc[~kept, NETWORK_COLUMN].isna().all()
    patches = candidate_patches(mag, mag, brain, affine, table.loc[kept, ["i", "j", "k"]])
    np.testing.assert_allclose(table.loc[kept, NETWORK_COLUMN],
                               network_probability(patches, model["network"]))
    part = result.parameters["model_part"]
    trees = predict_proba(table[kept], _trees_only(model), use_phase=part == "phase")
    stacked = calibrate(
        1 / (1 + np.exp(-stack_logit(trees, table.loc[kept, NETWORK_COLUMN], 20.0))),
        model[part]["stack"])
    np.testing.assert_allclose(table.loc[kept, "score"], stacked)
    context = find_candidates(mag, brain, affine, filtered_phase=phase, magnitude=mag,
                              parameters={"model": str(path)})
    analysed = analyse_candidates(context)
    with pytest.raises(ValueError, match="patch network"):
        merge_and_score(context, analysed)
    staged = merge_and_score(context, analysed, images=(mag, mag, brain))
    pd.testing.assert_frame_equal(staged.candidates, table)
