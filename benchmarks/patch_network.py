"""Would a small neural network on candidate patches beat the boosted trees on the
held-out family? (issue 11; an experiment, nothing here is shipped)

For every analysed candidate (not screened out, not on an invisible microbleed) of the
training cache's scans, two 3D patches are sampled: the relative intensity of the SWI and
of the bias-corrected magnitude (local background 10 mm, as the detector's), 11 x 11 x 11
points 0.7 mm apart (a 7.7 mm cube), trilinear, in a frame whose third axis is B0, so
that the patch does not depend on the voxel size, the storage order or an oblique slab.
A multi-layer perceptron (scikit-learn ``MLPClassifier``; hidden layers of
``--hidden`` units, ReLU) is fitted on the training scans of the seen families (the same
scans as the shipped trees; up to 150 random negatives per scan, positives resampled to a
quarter of the set), with the four flips/swaps that keep B0 an axis as augmentation, and
averaged over those four views at test time.

Reported on every candidate of the held-out family (``HELD_OUT_FAMILY``, all its scans):
ROC AUC, average precision, and the sensitivity (share of microbleed candidates) at 0.5
and 1 false-positive candidate per scan, for the trees (the model given with
``--model``, default the packaged one, which was fitted without that family), the
network, and their mean rank. Candidate level, not lesion level: several candidates can
lie on one microbleed. Reads the candidate tables and volumes of a training cache
(``python -m cmbprep.testing.detector_training --cache DIR --collect-only``; what is
missing is simulated and detected first)::

    python benchmarks/patch_network.py --cache /work/train/cache5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.detection import classifier
from cmbprep.algorithms.detection.candidates import relative_intensity
from cmbprep.testing import detector_training as dt

POINTS = 11  # per side
STEP_MM = 0.7
NEGATIVES_PER_SCAN = 150
BACKGROUND_MM = 10.0


def b0_frame_offsets(angle_rad=0.0):
    """(POINTS^3, 3) scanner-mm offsets of the patch lattice; its third axis is B0
    (scanner z), the first two are turned by ``angle_rad`` about it."""
    o = (np.arange(POINTS) - (POINTS - 1) / 2.0) * STEP_MM
    grid = np.stack(np.meshgrid(o, o, o, indexing="ij"), axis=-1).reshape(-1, 3)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return grid @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T


def scan_patches(cache, tag, rng, keep_all):
    """Patches (N, 2 * POINTS^3) and the candidate rows of one cached scan."""
    with np.load(Path(cache) / f"{tag}.npz") as d:
        arrays = {k: d[k] for k in ("swi", "magnitude", "brain", "affine")}
    cand = dt._usable(pd.read_csv(Path(cache) / f"cand_{tag}.csv", low_memory=False))
    negatives = cand[cand["truth"] != "cmb"]
    if not keep_all and len(negatives) > NEGATIVES_PER_SCAN:
        negatives = negatives.sample(NEGATIVES_PER_SCAN, random_state=int(rng.integers(1 << 31)))
    cand = pd.concat([cand[cand["truth"] == "cmb"], negatives])
    affine = arrays["affine"]
    vs = tuple(float(v) for v in voxel_sizes(affine))
    brain = arrays["brain"].astype(bool)
    to_voxels = np.linalg.inv(affine[:3, :3])
    channels = [np.clip(relative_intensity(arrays[k].astype(np.float32), brain,
                                           background_mm=BACKGROUND_MM, voxel_size=vs),
                        0.0, 1.5).astype(np.float32) for k in ("swi", "magnitude")]
    offsets = b0_frame_offsets()
    patches = np.empty((len(cand), 2 * POINTS**3), np.float32)
    for n, centre in enumerate(cand[["i", "j", "k"]].to_numpy(float)):
        points = centre[:, None] + to_voxels @ offsets.T
        patches[n] = np.concatenate([ndi.map_coordinates(ch, points, order=1, mode="nearest")
                                     for ch in channels])
    return patches - 1.0, cand.reset_index(drop=True)


def views(patches):
    """The patch and its three flips/swaps that keep B0 (third axis) an axis."""
    p = patches.reshape(len(patches), 2, POINTS, POINTS, POINTS)
    return [p, p[:, :, :, :, ::-1], p[:, :, ::-1], p.transpose(0, 1, 3, 2, 4)]


def flat(p):
    return np.ascontiguousarray(p).reshape(len(p), -1)


def sensitivity_at(y, p, n_scans, fp_per_scan):
    order = np.argsort(-p)
    fp, tp = np.cumsum(~y[order]), np.cumsum(y[order])
    ok = fp <= fp_per_scan * n_scans
    return float(tp[ok].max() / y.sum()) if ok.any() else 0.0


def main(argv=None):
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.neural_network import MLPClassifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None, help="trees (default: the packaged model)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    held = dt.HELD_OUT_FAMILY
    train_specs = [s for s in dt.scan_list("train") if s.family != held]
    test_specs = [s for cohort in ("train", "validation") for s in dt.scan_list(cohort)
                  if s.family == held]
    dt.collect(train_specs + test_specs, args.cache)  # simulates and detects what is missing
    t0 = time.perf_counter()
    train = [scan_patches(args.cache, dt._tag(s), rng, keep_all=False) for s in train_specs]
    test = [scan_patches(args.cache, dt._tag(s), rng, keep_all=True) for s in test_specs]
    print(f"patches of {len(train) + len(test)} scans in {time.perf_counter() - t0:.0f} s",
          flush=True)
    x = np.concatenate([p for p, _ in train])
    y = np.concatenate([(c["truth"] == "cmb").to_numpy() for _, c in train])
    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    rows = np.concatenate([negatives, rng.choice(positives, len(negatives) // 3)])
    rng.shuffle(rows)
    x_aug = np.concatenate([flat(v) for v in views(x[rows])])
    y_aug = np.tile(y[rows], 4)
    t0 = time.perf_counter()
    net = MLPClassifier(hidden_layer_sizes=tuple(args.hidden), alpha=1e-3, batch_size=256,
                        max_iter=60, early_stopping=True, validation_fraction=0.1,
                        n_iter_no_change=5, random_state=args.seed)
    net.fit(x_aug, y_aug)
    n_weights = sum(w.size for w in net.coefs_) + sum(b.size for b in net.intercepts_)
    print(f"network: {len(x_aug)} training patches (with flips), {net.n_iter_} epochs, "
          f"{time.perf_counter() - t0:.0f} s, {n_weights} weights", flush=True)

    x_test = np.concatenate([p for p, _ in test])
    cand = pd.concat([c.assign(scan=dt._tag(s)) for s, (_, c) in zip(test_specs, test)],
                     ignore_index=True)
    y_test = (cand["truth"] == "cmb").to_numpy()
    t0 = time.perf_counter()
    p_net = np.mean([net.predict_proba(flat(v))[:, 1] for v in views(x_test)], axis=0)
    per_candidate_ms = 1000 * (time.perf_counter() - t0) / len(x_test)
    p_tree = dt.system_scores(cand, classifier.load_model(args.model))
    rank = lambda p: pd.Series(p).rank(pct=True).to_numpy()  # noqa: E731
    n_scans = cand["scan"].nunique()
    print(f"held-out family {held}: {len(cand)} candidates, {int(y_test.sum())} on visible "
          f"microbleeds, {n_scans} scans; network {per_candidate_ms:.2f} ms per candidate")
    for name, p in (("trees", p_tree), ("network", p_net),
                    ("mean rank", (rank(p_tree) + rank(p_net)) / 2)):
        print(f"  {name:10s} AUC {roc_auc_score(y_test, p):.3f}  "
              f"AP {average_precision_score(y_test, p):.3f}  "
              f"sensitivity at 0.5 FP/scan {sensitivity_at(y_test, p, n_scans, 0.5):.3f}, "
              f"at 1 FP/scan {sensitivity_at(y_test, p, n_scans, 1.0):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
