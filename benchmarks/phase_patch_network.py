"""Does the local phase pattern around a candidate carry what the trees do not use?
(issue 11; an experiment, nothing of it is shipped)

The patch network of ``benchmarks/patch_network.py`` sees a candidate through the SWI and
the magnitude. What physically tells a small sphere from a piece of vein running along
B0 is the field: a sphere has dipole lobes outside it (positive along B0, negative
around its equator), a cylinder along B0 none. The trees read the phase only through
summaries (``dipole_correlation``, ``dipole_vs_cylinder``, ``dipole_phase_at_radius``,
...). This script adds a third channel to the patches, on the same lattice
(:func:`cmbprep.algorithms.detection.patches.b0_lattice_mm`): the filtered phase with
the detector's sign (paramagnetic positive; the SWI chain's handedness, used only on scans
where the detector used the phase) divided by pi, times the relative magnitude clipped to
[0, 1] (the phase inside a black lesion is noise). On scans without phase the channel is
zero.

Two networks are fitted on the same training rows with the same seed (the training scans
of the families the shipped trees learned from; the held-out and test families are never
in their training): ``net2`` on the SWI and magnitude channels, as before, and ``net3``
on all three. Reported on every analysed candidate of all scans of the held-out family
and of each test family, split by whether the detector used the phase: ROC AUC, average
precision and sensitivity at 0.5 / 1 false-positive candidate per scan of the trees, of
both networks and of each network's mean rank with the trees. Candidate level::

    python benchmarks/phase_patch_network.py --cache /work/train/cache --seeds 0 1 \
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from patch_network import fit_network, network_scores, sensitivity_at
from scipy import ndimage as ndi

from cmbprep.algorithms.detection import PHASE_SIGN_OF_HANDEDNESS, classifier
from cmbprep.algorithms.detection.patches import (
    PATCH_POINTS,
    b0_lattice_mm,
    candidate_patches,
)
from cmbprep.testing import detector_training as dt

NEGATIVES_PER_SCAN = 150


def phase_channel_patches(phase, sign, affine, centres_vox, magnitude_patches):
    """Sign-aligned phase / pi on the patch lattice, weighted by the relative magnitude
    (``magnitude_patches``: relative intensity - 1, as :func:`candidate_patches` gives
    channel 1) clipped to [0, 1]."""
    n = PATCH_POINTS
    centres = np.asarray(centres_vox, dtype=float).reshape(-1, 3)
    out = np.zeros((len(centres), n, n, n), np.float32)
    if phase is None or sign == 0 or not len(centres):
        return out
    affine = np.asarray(affine, dtype=float)
    lattice_vox = np.linalg.inv(affine[:3, :3]) @ b0_lattice_mm().T
    channel = (float(sign) / np.pi) * np.asarray(phase, dtype=np.float32)
    for row, centre in enumerate(centres):
        out[row] = ndi.map_coordinates(channel, centre[:, None] + lattice_vox, order=1,
                                       mode="nearest").reshape(n, n, n)
    weight = np.clip(np.asarray(magnitude_patches) + 1.0, 0.0, 1.0)
    return out * weight


def scan_patches3(cache, tag, rng, keep_all):
    """Three-channel patches (N, 3, P, P, P) and the candidate rows of one cached scan:
    the usable candidates (all of them with ``keep_all``, else the microbleeds and up to
    :data:`NEGATIVES_PER_SCAN` others)."""
    with np.load(Path(cache) / f"{tag}.npz") as d:
        arrays = {k: d[k] for k in ("swi", "magnitude", "brain", "affine")}
        phase = d["phase"] if "phase" in d.files else None
        handedness = str(d["handedness"]) if "handedness" in d.files else "n/a"
    cand = pd.read_csv(Path(cache) / f"cand_{tag}.csv", low_memory=False)
    for col in ("screened_out", "has_phase"):
        cand[col] = cand[col].astype(str).str.lower().isin(["true", "1"])
    cand = dt._usable(cand)
    negatives = cand[cand["truth"] != "cmb"]
    if not keep_all and len(negatives) > NEGATIVES_PER_SCAN:
        negatives = negatives.sample(NEGATIVES_PER_SCAN,
                                     random_state=int(rng.integers(1 << 31)))
    cand = pd.concat([cand[cand["truth"] == "cmb"], negatives]).reset_index(drop=True)
    centres = cand[["i", "j", "k"]].to_numpy(float)
    two = candidate_patches(arrays["swi"], arrays["magnitude"], arrays["brain"],
                            arrays["affine"], centres)
    used = bool(len(cand)) and bool(cand["has_phase"].iloc[0])
    sign = PHASE_SIGN_OF_HANDEDNESS.get(handedness, 0) if used else 0
    third = phase_channel_patches(phase, sign, arrays["affine"], centres, two[:, 1])
    return np.concatenate([two, third[:, None]], axis=1), cand


def fit(x, y, channels, hidden, seed):
    """:func:`patch_network.fit_network` (the same MLP and resampling: all negatives,
    positives drawn to a quarter of the set, the four views) on the ``channels`` of ``x``.
    The rows drawn depend on ``seed`` only, so both networks of a seed see the same rows."""
    return fit_network(x[:, channels], y, np.random.default_rng(seed), hidden, seed)[0]


def measures(y, p, n_scans):
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.sum() == 0 or y.all():
        return None
    return {"auc": float(roc_auc_score(y, p)), "ap": float(average_precision_score(y, p)),
            "sens_0.5": sensitivity_at(y, p, n_scans, 0.5),
            "sens_1": sensitivity_at(y, p, n_scans, 1.0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None, help="trees (default: the packaged model)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    unseen = (dt.HELD_OUT_FAMILY, *dt.TEST_FAMILIES)
    train_specs = [s for s in dt.scan_list("train") if s.family not in unseen]
    test_specs = [s for cohort in ("train", "validation") for s in dt.scan_list(cohort)
                  if s.family in unseen]
    dt.collect(train_specs + test_specs, args.cache)  # what is missing is made first
    t0 = time.perf_counter()
    train = [scan_patches3(args.cache, dt._tag(s), rng, keep_all=False) for s in train_specs]
    test = [scan_patches3(args.cache, dt._tag(s), rng, keep_all=True) for s in test_specs]
    print(f"patches of {len(train) + len(test)} scans in {time.perf_counter() - t0:.0f} s",
          flush=True)
    x = np.concatenate([p for p, _ in train])
    y = np.concatenate([(c["truth"] == "cmb").to_numpy() for _, c in train])
    with_phase = np.concatenate([c["has_phase"].to_numpy(bool) for _, c in train])
    print(f"training: {len(x)} patches, {int(y.sum())} on microbleeds, "
          f"{int(with_phase.sum())} from scans whose phase the detector used", flush=True)
    x_test = np.concatenate([p for p, _ in test])
    cand = pd.concat([c.assign(scan=dt._tag(s), family=s.family)
                      for s, (_, c) in zip(test_specs, test)], ignore_index=True)
    del train, test
    p_trees = dt.system_scores(cand, dt.trees_only(classifier.load_model(args.model)))
    rank = lambda p: pd.Series(p).rank(pct=True).to_numpy()  # noqa: E731
    p = {"trees": p_trees}
    for seed in args.seeds:
        for name, channels in (("net2", [0, 1]), ("net3", [0, 1, 2])):
            t0 = time.perf_counter()
            net = fit(x, y, channels, args.hidden, seed)
            p[f"{name}/{seed}"] = network_scores(net, x_test[:, channels])
            print(f"{name} seed {seed}: {net.n_iter_} epochs, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            p[f"trees+{name}/{seed}"] = (rank(p_trees) + rank(p[f"{name}/{seed}"])) / 2
    results = {}
    for family in unseen:
        for part, phase_used in (("phase", True), ("no_phase", False)):
            sel = ((cand["family"] == family) & (cand["has_phase"] == phase_used)).to_numpy()
            y_t = (cand.loc[sel, "truth"] == "cmb").to_numpy()
            n_scans = cand.loc[sel, "scan"].nunique()
            key = f"{family}/{part}"
            results[key] = {"n_candidates": int(sel.sum()), "n_cmb": int(y_t.sum()),
                            "n_scans": int(n_scans)}
            print(f"{key}: {int(sel.sum())} candidates, {int(y_t.sum())} on visible "
                  f"microbleeds, {n_scans} scans", flush=True)
            for name, scores_ in p.items():
                m = measures(y_t, scores_[sel], n_scans)
                results[key][name] = m
                if m:
                    print(f"  {name:14s} AUC {m['auc']:.3f} AP {m['ap']:.3f} sensitivity at "
                          f"0.5 / 1 FP per scan {m['sens_0.5']:.3f} / {m['sens_1']:.3f}",
                          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
