"""Detection benchmark on a phantom cohort (run by hand; not a test).

Seeds 1000+ are used here and by nothing else (tests use 0-99).

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \\
        .venv/bin/python benchmarks/detection.py [--quick] [--cache DIR]

For every phantom subject: SWI processing with :func:`cmbprep.algorithms.swi.process_swi`
(N4 bias correction, homodyne high-pass, auto handedness; one thread), sliding minIP with
:func:`cmbprep.algorithms.mip.sliding_minip`, the phantom's brain mask (the real pipeline
estimates it by registration), then both detectors. Detections (status ``cmb``; for
bian2013 also ``review``, i.e. everything shown to the rater as putative) are matched
one-to-one to truth within max(3 mm, apparent radius + 1.5 mm). ``bian2013_cmb_only``
counts only the candidates passing every rule.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from cmbprep.algorithms.detection import detect_bian2013, detect_cmbprep
from cmbprep.algorithms.mip import sliding_minip
from cmbprep.algorithms.swi import process_swi
from cmbprep.testing.phantom import PhantomConfig, simulate_subject

#: (protocol, overrides, seeds). Controls have no CMBs.
COHORT = [
    ("clinical", {"n_cmbs": 8, "n_calcifications": 2}, [1011, 1012]),
    ("iso1", {"n_cmbs": 8, "n_calcifications": 1}, [1021, 1022]),
    ("iso1", {"n_cmbs": 0, "n_calcifications": 1}, [1031]),
    ("clinical", {"n_cmbs": 0, "n_calcifications": 0}, [1041]),
    ("itp", {"n_cmbs": 8, "n_calcifications": 2}, [1001]),
]
QUICK = [
    ("clinical", {"n_cmbs": 8, "n_calcifications": 2}, [1011]),
    ("iso1", {"n_cmbs": 0, "n_calcifications": 1}, [1031]),
]


def match(detected_xyz, truth_xyz, radius_mm):
    """One-to-one matching within a per-truth radius (Hungarian on distances)."""
    if len(detected_xyz) == 0 or len(truth_xyz) == 0:
        return []
    dist = np.linalg.norm(truth_xyz[:, None, :] - detected_xyz[None, :, :], axis=2)
    cost = np.where(dist <= radius_mm[:, None], dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(r, c) for r, c in zip(rows, cols) if cost[r, c] < 1e6]


class _Subject:
    """What the benchmark needs from a phantom subject (also restorable from a cache)."""

    def __init__(self, truth, shape):
        self.truth = truth
        self.shape = shape


def prepare_subject(protocol, overrides, seed, cache_dir=None):
    """Simulate a subject and run the SWI chain; optionally cache the arrays (npz)."""
    tag = f"{protocol}_{seed}"
    if cache_dir:
        npz = os.path.join(cache_dir, tag + ".npz")
        if os.path.exists(npz):
            d = np.load(npz)
            truth = pd.read_csv(os.path.join(cache_dir, tag + ".csv"))
            arrays = {k: d[k] for k in ("swi", "phase", "minip", "brain", "affine")}
            return _Subject(truth, d["swi"].shape), arrays, {"simulate_s": np.nan,
                                                             "swi_s": np.nan}
    cfg = PhantomConfig.from_protocol(protocol, **overrides)
    t0 = time.perf_counter()
    sub = simulate_subject(cfg, seed=seed)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = process_swi(sub.magnitude, sub.phase, sub.affine, input_kind="gre",
                      echo_times=list(sub.echo_times_s), phase_units="rad", n_threads=1)
    minip = sliding_minip(out["swi"], sub.affine)
    t_swi = time.perf_counter() - t0
    arrays = {"swi": out["swi"], "phase": out["filtered_phase"], "minip": minip,
              "brain": sub.brain_mask, "affine": sub.affine}
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(os.path.join(cache_dir, tag + ".npz"), **arrays)
        sub.truth.to_csv(os.path.join(cache_dir, tag + ".csv"), index=False)
    return _Subject(sub.truth, out["swi"].shape), arrays, {"simulate_s": t_sim,
                                                           "swi_s": t_swi}


def run_subject(protocol, overrides, seed, cache_dir=None):
    sub, a, timing = prepare_subject(protocol, overrides, seed, cache_dir)
    results = {}
    t0 = time.perf_counter()
    results["cmbprep"] = detect_cmbprep(a["swi"], a["brain"], a["affine"],
                                        filtered_phase=a["phase"])
    timing["cmbprep_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results["bian2013"] = detect_bian2013(a["swi"], a["minip"], a["brain"], a["affine"])
    timing["bian2013_s"] = time.perf_counter() - t0
    return sub, results, timing


def evaluate(sub, result, detector):
    cand = result.candidates
    if len(cand) == 0:
        positive = cand
    elif detector == "bian2013":
        positive = cand[cand["status"].isin(["cmb", "review"])]
    elif detector == "bian2013_cmb_only":
        positive = cand[cand["status"] == "cmb"]
    else:
        positive = cand[cand["status"] == "cmb"]
    truth = sub.truth
    det_xyz = positive[["x", "y", "z"]].to_numpy(float)
    rows = []
    cmb = truth[truth["kind"] == "cmb"].reset_index(drop=True)
    calc = truth[truth["kind"] == "calcification"].reset_index(drop=True)
    radius = np.maximum(3.0, cmb["apparent_diameter_mm"].to_numpy(float) / 2 + 1.5)
    pairs = match(det_xyz, cmb[["x", "y", "z"]].to_numpy(float), radius)
    matched_det = {c for _, c in pairs}
    matched_truth = {r for r, _ in pairs}
    for r in range(len(cmb)):
        rows.append({"kind": "cmb", "found": r in matched_truth,
                     "apparent_diameter_mm": float(cmb.loc[r, "apparent_diameter_mm"]),
                     "mars_category": cmb.loc[r, "mars_category"]})
    # calcifications reported as CMB
    remaining = [c for c in range(len(det_xyz)) if c not in matched_det]
    calc_hits = 0
    if len(calc) and remaining:
        cr = np.maximum(3.0, calc["apparent_diameter_mm"].to_numpy(float) / 2 + 1.5)
        cpairs = match(det_xyz[remaining], calc[["x", "y", "z"]].to_numpy(float), cr)
        calc_hits = len(cpairs)
        matched_det |= {remaining[c] for _, c in cpairs}
    fp = len(det_xyz) - len(matched_det)
    return rows, fp, calc_hits, len(calc)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two subjects only")
    parser.add_argument("--cache", default=None,
                        help="directory to store/reuse simulated+SWI-processed subjects")
    args = parser.parse_args(argv)
    cohort = QUICK if args.quick else COHORT
    stats = {d: {"lesions": [], "fp": [], "fp_control": [], "calc_hits": 0, "calc_total": 0}
             for d in ("cmbprep", "bian2013", "bian2013_cmb_only")}
    timings = []
    for protocol, overrides, seeds in cohort:
        for seed in seeds:
            sub, results, timing = run_subject(protocol, overrides, seed, args.cache)
            timing.update(protocol=protocol, seed=seed, shape="x".join(map(str, sub.shape)))
            timings.append(timing)
            control = int((sub.truth["kind"] == "cmb").sum()) == 0
            results["bian2013_cmb_only"] = results["bian2013"]
            for det, result in results.items():
                rows, fp, calc_hits, n_calc = evaluate(sub, result, det)
                s = stats[det]
                s["lesions"] += [dict(r, protocol=protocol) for r in rows]
                s["fp"].append(fp)
                if control:
                    s["fp_control"].append(fp)
                s["calc_hits"] += calc_hits
                s["calc_total"] += n_calc
                found = sum(r["found"] for r in rows)
                print(f"{protocol:9s} seed {seed} {det:17s}: {found}/{len(rows)} CMBs, FP {fp}, "
                      f"calc as CMB {calc_hits}/{n_calc}, "
                      f"candidates {len(result.candidates)}, "
                      f"{timing[det.replace('_cmb_only', '') + '_s']:.1f} s",
                      flush=True)
    print()
    print(pd.DataFrame(timings).round(2).to_string(index=False))
    print()
    for det, s in stats.items():
        les = pd.DataFrame(s["lesions"])
        tp = int(les["found"].sum()) if len(les) else 0
        n = len(les)
        fp = int(np.sum(s["fp"]))
        sens = tp / n if n else float("nan")
        prec = tp / (tp + fp) if tp + fp else float("nan")
        f1 = 2 * sens * prec / (sens + prec) if sens + prec else 0.0
        big = les[les["apparent_diameter_mm"] >= 3] if n else les
        small = les[(les["apparent_diameter_mm"] < 3) & (les["apparent_diameter_mm"] > 0)] \
            if n else les
        invisible = les[les["apparent_diameter_mm"] <= 0] if n else les
        print(f"== {det}")
        print(f"  sensitivity {sens:.3f} ({tp}/{n}), precision {prec:.3f}, F1 {f1:.3f}")
        print(f"  sensitivity apparent diameter >= 3 mm: "
              f"{big['found'].mean() if len(big) else float('nan'):.3f} ({len(big)}), "
              f"0-3 mm: {small['found'].mean() if len(small) else float('nan'):.3f} "
              f"({len(small)}), invisible (apparent diameter 0, signal never below 50 %): "
              f"{invisible['found'].mean() if len(invisible) else float('nan'):.3f} "
              f"({len(invisible)})")
        if len(invisible):
            tp_v = tp - int(invisible["found"].sum())
            n_v = n - len(invisible)
            sens_v = tp_v / n_v if n_v else float("nan")
            prec_v = tp_v / (tp_v + fp) if tp_v + fp else float("nan")
            f1_v = 2 * sens_v * prec_v / (sens_v + prec_v) if sens_v + prec_v else 0.0
            print(f"  visible CMBs only (detections of invisible CMBs not counted): "
                  f"sensitivity {sens_v:.3f}, precision {prec_v:.3f}, F1 {f1_v:.3f}")
        print(f"  FP/scan {fp / len(s['fp']):.2f}, FP/control scan "
              f"{np.mean(s['fp_control']) if s['fp_control'] else float('nan'):.2f}")
        print(f"  calcifications reported as CMB: {s['calc_hits']}/{s['calc_total']}")
        if n:
            print("  sensitivity by MARS category:",
                  les.groupby("mars_category")["found"].mean().round(3).to_dict())
            print("  sensitivity by protocol:",
                  les.groupby("protocol")["found"].mean().round(3).to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
