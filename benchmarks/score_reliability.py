"""What does a candidate's ``score`` mean on families the model never saw? (issue 11; a
measurement)

``score`` is a probability calibrated on the validation candidates of the families the
model learned from (Platt scaling per part, :mod:`cmbprep.testing.detector_training`).
This script reports its reliability on those validation scans (in family) and on all
scans of the held-out family and of each test family: per bin of score, the mean score
against the share of candidates on a visible microbleed, for the candidates a rater is
shown (score >= the review probability; with two calibrations, by either), and the
expected calibration error over them (``ECE_shown``: count-weighted mean of |mean score -
share| over bins of 0.1).

With ``--out-of-family`` it also measures a second Platt map per part, fitted on
*out-of-family* scores: each seen family's validation candidates scored by trees fitted
on the other seen families' training scans (one more fit per family and part), the
logits pooled. Applied to the shipped trees' output with the accept threshold mapped
through both maps, it changes no accept decision; it changes the scores, and with them
the review band (the review probability is a fixed score). Candidate level, not lesion
level (several candidates can lie on one microbleed).

Reads the candidate tables of a training cache (``python -m
cmbprep.testing.detector_training --cache DIR --collect-only``); about 2 minutes with
``--out-of-family`` on one core::

    python benchmarks/score_reliability.py --cache /work/train/cache [--out-of-family] \
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cmbprep.algorithms.detection.classifier import FEATURES, PHASE_FEATURES, load_model
from cmbprep.testing import detector_training as dt

#: Score bins of the reliability table.
EDGES = np.round(np.arange(0.0, 1.0001, 0.1), 2)
EDGES[-1] = 1.0 + 1e-9


def reliability(score, y, shown):
    """Rows (bin, n, mean score, share on microbleeds) over the candidates ``shown`` and
    their ECE."""
    score, y, shown = np.asarray(score, float), np.asarray(y, bool), np.asarray(shown, bool)
    rows, err = [], 0.0
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        sel = shown & (score >= lo) & (score < hi)
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{min(hi, 1.0):.1f}", "n": int(sel.sum()),
                         "mean_score": float(score[sel].mean()),
                         "share_cmb": float(y[sel].mean())})
            err += sel.sum() * abs(score[sel].mean() - y[sel].mean())
    return rows, float(err / max(shown.sum(), 1))


def out_of_family_calibration(train_c, val_c, families):
    """Per part, the Platt map of out-of-family logits: each of ``families``' validation
    candidates scored by trees fitted on the others' training candidates."""
    maps = {}
    for name, use_phase in (("phase", True), ("no_phase", False)):
        names = [n for n in FEATURES if use_phase or n not in PHASE_FEATURES]
        weight = dt.CALCIFICATION_WEIGHT if use_phase else 1.0
        logits, labels = [], []
        for family in families:
            tr = train_c[train_c["family"].isin(families) & (train_c["family"] != family)]
            va = dt._usable(val_c[val_c["family"] == family])
            tr = tr[tr["has_phase"]] if use_phase else tr
            va = va[va["has_phase"]] if use_phase else va
            part = dt._fit_part(tr, names, weight)
            raw = np.clip(dt._raw_scores(va, part), 1e-12, 1 - 1e-12)
            logits.append(np.log(raw / (1 - raw)))
            labels.append((va["truth"] == "cmb").to_numpy(int))
            print(f"out-of-family {name}: {family} scored by trees without it", flush=True)
        maps[name] = dt._platt(np.concatenate(logits), np.concatenate(labels))
    return maps


def mapped_threshold(threshold, old, new):
    """The score under calibration ``new`` of the raw output that ``old`` maps to
    ``threshold`` (both logistic): the same accept decisions."""
    z = (np.log(threshold / (1 - threshold)) - old["intercept"]) / old["slope"]
    return float(1 / (1 + np.exp(-(new["slope"] * z + new["intercept"]))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None, help="classifier (default: the packaged one)")
    parser.add_argument("--out-of-family", action="store_true",
                        help="also the out-of-family Platt map (one fit per family and part)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    shipped = dt.trees_only(load_model(args.model))
    train = dt.collect(dt.scan_list("train"), args.cache)
    validation = dt.collect(dt.scan_list("validation"), args.cache)
    cand, _ = dt._pooled(train, validation)
    cand = dt._usable(cand).reset_index(drop=True)
    unseen = (dt.HELD_OUT_FAMILY, *dt.TEST_FAMILIES)
    families = dt.model_families(train[0]["family"].unique(), dt.HELD_OUT_FAMILY)
    val_scans = set(zip(validation[0]["family"], validation[0]["seed"]))
    in_val = np.array([k in val_scans for k in zip(cand["family"], cand["seed"])])
    groups = {**{f"{f} validation (in family)": in_val & (cand["family"] == f).to_numpy()
                 for f in families},
              **{f"{f} all scans (never seen)": (cand["family"] == f).to_numpy()
                 for f in unseen},
              "pooled never seen": cand["family"].isin(unseen).to_numpy()}
    models = {"shipped": shipped}
    if args.out_of_family:
        maps = out_of_family_calibration(train[0], validation[0], families)
        models["out_of_family"] = {
            name: {**shipped[name], "calibration": maps[name],
                   "accept_score": mapped_threshold(shipped[name]["accept_score"],
                                                    shipped[name]["calibration"], maps[name])}
            for name in ("phase", "no_phase")}
        for name in ("phase", "no_phase"):
            print(f"{name}: Platt slope/intercept shipped "
                  f"{shipped[name]['calibration']['slope']:.3f}/"
                  f"{shipped[name]['calibration']['intercept']:.3f}, out of family "
                  f"{maps[name]['slope']:.3f}/{maps[name]['intercept']:.3f}; accept "
                  f"threshold {shipped[name]['accept_score']:.3f} -> "
                  f"{models['out_of_family'][name]['accept_score']:.3f}")
    y = (cand["truth"] == "cmb").to_numpy()
    scores = {label: dt.system_scores(cand, m) for label, m in models.items()}
    accepted = {label: scores[label] >= np.where(cand["has_phase"],
                                                 models[label]["phase"]["accept_score"],
                                                 models[label]["no_phase"]["accept_score"])
                for label in models}
    changed = sum(int((accepted[label] != accepted["shipped"]).sum()) for label in models)
    print(f"accept decisions that differ from the shipped calibration's: {changed}")
    # the candidates any of the calibrations shows a rater (the same set for all)
    either = np.max(np.stack(list(scores.values())), axis=0) >= dt.REVIEW_PROBABILITY
    results = {}
    for group, sel in groups.items():
        n_scans = cand.loc[sel, ["family", "seed"]].drop_duplicates().shape[0]
        results[group] = {}
        for label, score in scores.items():
            rows, ece = reliability(score[sel], y[sel], either[sel])
            review = ((score[sel] >= dt.REVIEW_PROBABILITY) & (score[sel] < np.where(
                cand.loc[sel, "has_phase"], models[label]["phase"]["accept_score"],
                models[label]["no_phase"]["accept_score"]))).sum() / n_scans
            results[group][label] = {"ece_shown": ece, "review_candidates_per_scan": review,
                                     "bins": rows}
            print(f"{group}, {label}: ECE_shown {ece:.3f}, review candidates per scan "
                  f"{review:.2f}; " + "; ".join(
                      f"{r['bin']} n {r['n']} score {r['mean_score']:.2f} share "
                      f"{r['share_cmb']:.2f}" for r in rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
