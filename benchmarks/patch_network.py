"""Would a small neural network on candidate patches beat the boosted trees on the
held-out family? (issue 11; the experiments behind the stacked models that
``cmbprep.testing.network_training`` fits; none is shipped)

For every analysed candidate (not screened out, not on an invisible microbleed) of the
training cache's scans, two 3D patches are sampled (as the detector samples them:
``cmbprep.algorithms.detection.patches.candidate_patches``): the relative intensity of
the SWI and of the bias-corrected magnitude (local background 10 mm, as the detector's),
11 x 11 x 11 points 0.7 mm apart (a 7.7 mm cube), trilinear, in a frame whose third axis
is B0, so that the patch does not depend on the voxel size, the storage order or an
oblique slab. A multi-layer perceptron (scikit-learn ``MLPClassifier``; hidden layers of
``--hidden`` units, ReLU) is fitted on the training scans of the seen families (the same
scans as the shipped trees; up to 150 random negatives per scan, positives resampled to a
quarter of the set), with the four flips/swaps that keep B0 an axis as augmentation, and
averaged over those four views at test time. With ``--augment-protocol`` each training
view is also given a random protocol (:func:`protocol_augment`), so that the network
cannot learn one protocol's look. The test families (``TEST_FAMILIES``) are never in its
training.

Reported on every candidate of the held-out family (``HELD_OUT_FAMILY``, all its scans)
and of each test family:
ROC AUC, average precision, and the sensitivity (share of microbleed candidates) at 0.5
and 1 false-positive candidate per scan, for the trees (the model given with
``--model``, default the packaged one, which was fitted without that family), the
network, and their mean rank. Candidate level, not lesion level: several candidates can
lie on one microbleed. With ``--lesion-level``, also the lesion-level measures of the
stack (:func:`lesion_level`: thresholds set on the validation scans of the seen
families) beside the trees alone, for each false-positive budget (``--stack-max-fp``)
and each bound on the network's say (``--network-shift``: the trees' logit moved toward
the network's by at most S, as ``detector_training --network`` stacks them; default
the mean of the two logits, the first stack measured; with ``--network-lower-only`` the
network may only lower the trees' logit, a veto); ``--leave-one-family-out`` gives
instead the lesion-level table of both for each family A-F left out of trees, network and
thresholds (:func:`leave_one_family_out`). Reads the candidate tables and volumes of a
training cache (``python -m cmbprep.testing.detector_training --cache DIR
--collect-only``; what is missing is simulated and detected first); about 5 minutes,
6 with ``--lesion-level``, 21 for ``--leave-one-family-out`` (one core)::

    python benchmarks/patch_network.py --cache /work/train/cache9 [--augment-protocol] \
        [--lesion-level | --leave-one-family-out] [--network-shift 0.25 0.5 1.0] \
        [--network-lower-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.detection import classifier
from cmbprep.algorithms.detection.network import stack_logit
from cmbprep.algorithms.detection.patches import (
    PATCH_POINTS,
    PATCH_STEP_MM,
    candidate_patches,
    patch_views,
)
from cmbprep.testing import detector_training as dt

POINTS = PATCH_POINTS
STEP_MM = PATCH_STEP_MM
NEGATIVES_PER_SCAN = 150


def scan_patches(cache, tag, rng, keep_all, analysed=False):
    """Patches (N, 2 * POINTS^3; :func:`cmbprep.algorithms.detection.patches.
    candidate_patches`, as the detector samples them) and the candidate rows of one
    cached scan: the usable candidates (not screened out, not on an invisible
    microbleed), or with ``analysed`` every candidate not screened out."""
    with np.load(Path(cache) / f"{tag}.npz") as d:
        arrays = {k: d[k] for k in ("swi", "magnitude", "brain", "affine")}
    cand = pd.read_csv(Path(cache) / f"cand_{tag}.csv", low_memory=False)
    cand["screened_out"] = cand["screened_out"].astype(str).str.lower().isin(["true", "1"])
    cand = cand[~cand["screened_out"]] if analysed else dt._usable(cand)
    negatives = cand[cand["truth"] != "cmb"]
    if not keep_all and len(negatives) > NEGATIVES_PER_SCAN:
        negatives = negatives.sample(NEGATIVES_PER_SCAN, random_state=int(rng.integers(1 << 31)))
    cand = pd.concat([cand[cand["truth"] == "cmb"], negatives])
    patches = candidate_patches(arrays["swi"], arrays["magnitude"], arrays["brain"],
                                arrays["affine"], cand[["i", "j", "k"]])
    return flat(patches), cand.reset_index(drop=True)


def views(patches):
    """The patch and its three flips/swaps that keep B0 (third axis) an axis; ``patches``
    (N, channels, POINTS, POINTS, POINTS), or flattened to (N, channels * POINTS ** 3)."""
    return patch_views(patches.reshape(len(patches), -1, POINTS, POINTS, POINTS))


def protocol_augment(patches, rng):
    """Patches (N, 2, POINTS, POINTS, POINTS; relative intensity - 1, third axis B0),
    each with a random protocol: a Gaussian blur along B0 of sigma 0-1 mm (thicker
    slices) and across B0 of 0-0.4 mm (coarser in-plane), the darkness scaled by 0.7-1.3
    (another TE, field strength or susceptibility) and Gaussian noise of standard
    deviation 0-0.05."""
    out = np.empty_like(patches)
    along = rng.uniform(0.0, 1.0, len(patches)) / STEP_MM  # sigma in lattice points
    across = rng.uniform(0.0, 0.4, len(patches)) / STEP_MM
    scale = rng.uniform(0.7, 1.3, len(patches)).astype(np.float32)
    noise = rng.uniform(0.0, 0.05, len(patches)).astype(np.float32)
    for n, patch in enumerate(patches):
        p = ndi.gaussian_filter(patch, (0, across[n], across[n], along[n]), mode="nearest")
        out[n] = p * scale[n] + noise[n] * rng.standard_normal(p.shape, dtype=np.float32)
    return out


def network_scores(net, patches, clip=0.0):
    """The network's probability averaged over the four views of each patch, clipped to
    [``clip``, 1 - ``clip``] (``--network-clip``: how far it may overrule the trees)."""
    p = np.mean([net.predict_proba(flat(v))[:, 1] for v in views(patches)], axis=0)
    return np.clip(p, clip, 1.0 - clip)


def analysed_patches(cache, specs, cand, rng):
    """Patches of every analysed (not screened out) candidate of ``cand`` (the candidate
    tables of ``specs``, index 0..N-1) and the rows of ``cand`` they belong to."""
    out, where = [], []
    for spec in specs:
        patches, rows = scan_patches(cache, dt._tag(spec), rng, keep_all=True, analysed=True)
        sel = np.flatnonzero(((cand["family"] == spec.family) & (cand["seed"] == spec.seed)
                              & ~cand["screened_out"]).to_numpy())
        order = pd.Index(cand.loc[sel, "candidate_id"]).get_indexer(rows["candidate_id"])
        out.append(patches)
        where.append(sel[order])
    return np.concatenate(out), np.concatenate(where)


def combined_logit(p_trees, p_net, shift=None, lower_only=False):
    """The stack's logit: the mean of the trees' and the network's logits (the first
    stack, detector 0.8.0), or with ``shift`` the trees' logit moved toward the network's
    by at most ``shift`` (``--network-shift``;
    :func:`cmbprep.algorithms.detection.network.stack_logit`, as the detector does); with
    ``lower_only`` too, only downward (``--network-lower-only``: the network may veto,
    never raise)."""
    if shift is not None:
        z = stack_logit(p_trees, p_net, shift)
        # shift 0 is the trees' own logit (clipped as the detector clips it)
        return np.minimum(z, stack_logit(p_trees, p_net, 0.0)) if lower_only else z
    p = np.clip(np.stack([np.asarray(p_trees, float), np.asarray(p_net, float)]),
                1e-6, 1.0 - 1e-6)
    return np.log(p / (1.0 - p)).mean(axis=0)


def fit_stack(cand, truths, trees, p_net, in_val, max_fp_per_scan=dt.MAX_FP_PER_SCAN,
              shift=None, lower_only=False):
    """Per part, the Platt map of the stack's logit (:func:`combined_logit`) and its
    accept threshold, fitted on the validation rows ``in_val`` of ``cand`` by the shipped
    rule (:func:`cmbprep.testing.detector_training.choose_accept_threshold`), at most
    ``max_fp_per_scan`` false positives per validation scan."""
    from sklearn.linear_model import LogisticRegression

    screened = cand["screened_out"].to_numpy(bool)
    stack = {}
    for name, use_phase in (("phase", True), ("no_phase", False)):
        as_part = cand.assign(has_phase=use_phase)
        z = combined_logit(dt.system_scores(as_part, trees), p_net, shift, lower_only)
        val = in_val & (cand["has_phase"].to_numpy(bool) if use_phase else True)
        fit_rows = val & ~screened & (cand["truth"] != "invisible_cmb").to_numpy()
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(
            z[fit_rows, None], (cand["truth"] == "cmb").to_numpy(int)[fit_rows])
        part = {"calibration": {"method": "logistic", "slope": float(platt.coef_[0, 0]),
                                "intercept": float(platt.intercept_[0])},
                "review_score": dt.REVIEW_PROBABILITY}
        score = np.where(screened, 0.0, classifier.calibrate(1 / (1 + np.exp(-z)), part))
        curve = dt._threshold_curve(as_part[val], truths, {name: part}, name,
                                    scores=score[val])
        best = float(dt.choose_accept_threshold(curve, max_fp_per_scan,
                                                dt.calcification_limit(curve, name))
                     ["threshold"])
        stack[name] = {**part, "accept_score": best,
                       "review_score": min(dt.REVIEW_PROBABILITY, best), "shift": shift,
                       "lower_only": lower_only}
    return stack


def stack_probability(cand, trees, p_net, stack):
    """The stack's calibrated probability of each candidate (its scan's part)."""
    has_phase = cand["has_phase"].to_numpy(bool)
    score = np.zeros(len(cand))
    for name, use_phase in (("phase", True), ("no_phase", False)):
        z = combined_logit(dt.system_scores(cand.assign(has_phase=use_phase), trees), p_net,
                           stack[name]["shift"], stack[name]["lower_only"])
        sel = has_phase == use_phase
        score[sel] = classifier.calibrate(1 / (1 + np.exp(-z[sel])), stack[name])
    return np.where(cand["screened_out"].to_numpy(bool), 0.0, score)


def compare_with_trees(cand, truths, trees, p_net, stack):
    """Lesion-level measures (:func:`~cmbprep.testing.detector_training._compact`) of the
    trees alone and of the stack on ``cand``."""
    score = stack_probability(cand, trees, p_net, stack)
    return {"trees": dt._compact(dt.evaluate_system(cand, truths, trees)["all"]),
            "stack": dt._compact(dt.evaluate_system(cand, truths, stack, scores=score)["all"])}


def _print_comparison(label, result):
    for name, r in result.items():
        print(f"{label}, {name}: F1 {r['f1']:.3f}, sensitivity {r['sensitivity']:.3f}, "
              f"FP per scan {r['fp_per_scan']:.2f}, calcifications "
              f"{r['calcifications_as_cmb']}/{r['calcifications']}", flush=True)


def _settings(budgets, shifts, lower_only=False):
    """``(label, budget, shift)`` of every stack measured."""
    down = ", lowering only" if lower_only else ""
    return [(f"budget {b}" + ("" if s is None else f", shift {s}{down}"), b, s)
            for b in budgets for s in shifts]


def lesion_level(net, trees, cache, rng, unseen, budgets=(dt.MAX_FP_PER_SCAN,), clip=0.0,
                 shifts=(None,), lower_only=False):
    """Lesion-level measures of the stack (:func:`combined_logit` of trees and network,
    Platt-mapped and thresholded per part on the validation scans of the seen families, as
    :func:`cmbprep.testing.detector_training.fit_model` does for the trees, at each
    false-positive budget of ``budgets`` and shift of ``shifts``) beside the trees alone,
    on those validation scans and on all scans of each ``unseen`` family."""
    val_specs = [s for s in dt.scan_list("validation") if s.family not in unseen]
    test_specs = [s for c in ("train", "validation") for s in dt.scan_list(c)
                  if s.family in unseen]
    cand, truths = dt.collect(val_specs + test_specs, cache)
    cand = cand.reset_index(drop=True)
    patches, where = analysed_patches(cache, val_specs + test_specs, cand, rng)
    p_net = np.zeros(len(cand))
    p_net[where] = network_scores(net, patches, clip)
    in_val = pd.Series(list(zip(cand["family"], cand["seed"]))).isin(
        {(s.family, s.seed) for s in val_specs}).to_numpy()
    groups = {"validation scans of the seen families": in_val,
              **{f: (cand["family"] == f).to_numpy() for f in unseen}}
    for label, budget, shift in _settings(budgets, shifts, lower_only):
        stack = fit_stack(cand, truths, trees, p_net, in_val, budget, shift, lower_only)
        print(f"stack at {label} (FP per validation scan), thresholds: "
              + ", ".join(f"{k} {v['accept_score']:.3f}" for k, v in stack.items()))
        for group, sel in groups.items():
            _print_comparison(group, compare_with_trees(cand[sel], truths, trees,
                                                        p_net[sel], stack))


def fit_network(x, y, rng, hidden, seed, augment=False):
    """The MLP on the patches ``x`` (labels ``y``): all negatives, positives resampled to
    a quarter of the set, the four views (each with a random protocol if ``augment``)."""
    from sklearn.neural_network import MLPClassifier

    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    rows = np.concatenate([negatives, rng.choice(positives, len(negatives) // 3)])
    rng.shuffle(rows)
    x_aug = np.concatenate([flat(protocol_augment(v, rng) if augment else v)
                            for v in views(x[rows])])
    y_aug = np.tile(y[rows], 4)
    net = MLPClassifier(hidden_layer_sizes=tuple(hidden), alpha=1e-3, batch_size=256,
                        max_iter=60, early_stopping=True, validation_fraction=0.1,
                        n_iter_no_change=5, random_state=seed)
    return net.fit(x_aug, y_aug), len(x_aug)


def leave_one_family_out(cache, hidden, seed, budgets=(dt.MAX_FP_PER_SCAN,), clip=0.0,
                         shifts=(None,), lower_only=False):
    """For each family A-F: trees (:func:`cmbprep.testing.detector_training.fit_model`)
    and network fitted on the other families' training scans (test families never), the
    stack calibrated and thresholded on their validation scans at each false-positive
    budget of ``budgets``; the trees alone and the stack measured on all 48 scans of the
    family left out, and on those validation scans (the figure a budget may be chosen
    by, since it involves no family left out)."""
    rng = np.random.default_rng(seed)
    train_c, _ = dt.collect(dt.scan_list("train"), cache)
    val_c, val_t = dt.collect(dt.scan_list("validation"), cache)
    families = dt.model_families(train_c["family"].unique())
    specs = [s for c in ("train", "validation") for s in dt.scan_list(c)
             if s.family in families]
    cand, truths = dt.collect(specs, cache)
    cand = cand.reset_index(drop=True)
    t0 = time.perf_counter()
    sampled = {dt._tag(s): scan_patches(cache, dt._tag(s), rng, keep_all=False)
               for s in dt.scan_list("train") if s.family in families}
    patches, where = analysed_patches(cache, specs, cand, rng)
    print(f"patches of {len(specs)} scans in {time.perf_counter() - t0:.0f} s", flush=True)
    val_scans = {(s.family, s.seed) for s in dt.scan_list("validation")}
    in_val = pd.Series(list(zip(cand["family"], cand["seed"]))).isin(val_scans).to_numpy()
    settings = _settings(budgets, shifts, lower_only)
    rows = {label: {} for label, _, _ in settings}
    for family in families:
        t0 = time.perf_counter()
        learn = [f for f in families if f != family]
        tags = [t for t in sampled if t.split("_")[0] in learn]
        x = np.concatenate([sampled[t][0] for t in tags])
        y = np.concatenate([(sampled[t][1]["truth"] == "cmb").to_numpy() for t in tags])
        net, _ = fit_network(x, y, rng, hidden, seed)
        parts = dt.fit_model(train_c[train_c["family"].isin(learn)],
                             val_c[val_c["family"].isin(learn)], val_t)
        trees = {"phase": parts["phase"], "no_phase": parts["no_phase"]}
        p_net = np.zeros(len(cand))
        p_net[where] = network_scores(net, patches, clip)
        seen_val = in_val & cand["family"].isin(learn).to_numpy()
        out = (cand["family"] == family).to_numpy()
        for label, budget, shift in settings:
            stack = fit_stack(cand, truths, trees, p_net, seen_val, budget, shift,
                              lower_only)
            rows[label][family] = {
                "left out": compare_with_trees(cand[out], truths, trees, p_net[out], stack),
                "validation": compare_with_trees(cand[seen_val], truths, trees,
                                                 p_net[seen_val], stack)}
            for where_, result in rows[label][family].items():
                _print_comparison(f"{family} left out, {label}, {where_} "
                                  f"({time.perf_counter() - t0:.0f} s)", result)
    for label, _, _ in settings:
        for where_ in ("left out", "validation"):
            for name in ("trees", "stack"):
                print(f"{label}, {where_}, mean F1 over the folds, {name}: "
                      f"{np.mean([r[where_][name]['f1'] for r in rows[label].values()]):.3f}",
                      flush=True)
    return rows


def flat(p):
    return np.ascontiguousarray(p).reshape(len(p), -1)


def sensitivity_at(y, p, n_scans, fp_per_scan):
    order = np.argsort(-p)
    fp, tp = np.cumsum(~y[order]), np.cumsum(y[order])
    ok = fp <= fp_per_scan * n_scans
    return float(tp[ok].max() / y.sum()) if ok.any() else 0.0


def main(argv=None):
    from sklearn.metrics import average_precision_score, roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None, help="trees (default: the packaged model)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment-protocol", action="store_true",
                        help="give each training view a random protocol")
    parser.add_argument("--lesion-level", action="store_true",
                        help="also measure the stack at the lesion level (thresholds set "
                             "on the validation scans)")
    parser.add_argument("--stack-max-fp", type=float, nargs="+",
                        default=[dt.MAX_FP_PER_SCAN],
                        help="false positives per validation scan the stack's accept "
                             "threshold may give; several values are each measured "
                             "(default: the trees' limit)")
    parser.add_argument("--network-clip", type=float, default=0.0,
                        help="clip the network's probability to [P, 1 - P] before it is "
                             "stacked (lesion-level measures), so that it cannot overrule "
                             "the trees with a confident mistake")
    parser.add_argument("--network-shift", type=float, nargs="+", default=[None],
                        help="stack by moving the trees' logit toward the network's by at "
                             "most S (instead of their mean), so that the network cannot "
                             "reverse a confident verdict of the trees; several values are "
                             "each measured")
    parser.add_argument("--network-lower-only", action="store_true",
                        help="with --network-shift: the network may only lower the trees' "
                             "logit (a veto by at most S), never raise it")
    parser.add_argument("--leave-one-family-out", action="store_true",
                        help="only the lesion-level leave-one-family-out table of the "
                             "trees and of the stack (A-F)")
    args = parser.parse_args(argv)
    if args.leave_one_family_out:
        leave_one_family_out(args.cache, args.hidden, args.seed, args.stack_max_fp,
                             args.network_clip, args.network_shift, args.network_lower_only)
        return 0
    rng = np.random.default_rng(args.seed)
    held = dt.HELD_OUT_FAMILY
    unseen = (held, *dt.TEST_FAMILIES)
    train_specs = [s for s in dt.scan_list("train") if s.family not in unseen]
    test_specs = [s for cohort in ("train", "validation") for s in dt.scan_list(cohort)
                  if s.family in unseen]
    dt.collect(train_specs + test_specs, args.cache)  # simulates and detects what is missing
    t0 = time.perf_counter()
    train = [scan_patches(args.cache, dt._tag(s), rng, keep_all=False) for s in train_specs]
    test = [scan_patches(args.cache, dt._tag(s), rng, keep_all=True) for s in test_specs]
    print(f"patches of {len(train) + len(test)} scans in {time.perf_counter() - t0:.0f} s",
          flush=True)
    x = np.concatenate([p for p, _ in train])
    y = np.concatenate([(c["truth"] == "cmb").to_numpy() for _, c in train])
    t0 = time.perf_counter()
    net, n_train = fit_network(x, y, rng, args.hidden, args.seed, args.augment_protocol)
    n_weights = sum(w.size for w in net.coefs_) + sum(b.size for b in net.intercepts_)
    print(f"network: {n_train} training patches (with flips), {net.n_iter_} epochs, "
          f"{time.perf_counter() - t0:.0f} s, {n_weights} weights", flush=True)

    x_test = np.concatenate([p for p, _ in test])
    cand = pd.concat([c.assign(scan=dt._tag(s), family=s.family)
                      for s, (_, c) in zip(test_specs, test)], ignore_index=True)
    t0 = time.perf_counter()
    p_net_all = network_scores(net, x_test)
    per_candidate_ms = 1000 * (time.perf_counter() - t0) / len(x_test)
    p_tree_all = dt.system_scores(cand, dt.trees_only(classifier.load_model(args.model)))
    rank = lambda p: pd.Series(p).rank(pct=True).to_numpy()  # noqa: E731
    print(f"network {per_candidate_ms:.2f} ms per candidate and 4 views")
    for family in unseen:
        sel = (cand["family"] == family).to_numpy()
        y_test = (cand.loc[sel, "truth"] == "cmb").to_numpy()
        p_tree, p_net = p_tree_all[sel], p_net_all[sel]
        n_scans = cand.loc[sel, "scan"].nunique()
        kind = "held-out family" if family == held else "test family"
        print(f"{kind} {family}: {int(sel.sum())} candidates, {int(y_test.sum())} on visible "
              f"microbleeds, {n_scans} scans")
        for name, p in (("trees", p_tree), ("network", p_net),
                        ("mean rank", (rank(p_tree) + rank(p_net)) / 2)):
            print(f"  {name:10s} AUC {roc_auc_score(y_test, p):.3f}  "
                  f"AP {average_precision_score(y_test, p):.3f}  "
                  f"sensitivity at 0.5 FP/scan {sensitivity_at(y_test, p, n_scans, 0.5):.3f}, "
                  f"at 1 FP/scan {sensitivity_at(y_test, p, n_scans, 1.0):.3f}", flush=True)
    if args.lesion_level:
        lesion_level(net, dt.trees_only(classifier.load_model(args.model)), args.cache, rng,
                     unseen, args.stack_max_fp, args.network_clip, args.network_shift,
                     args.network_lower_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
