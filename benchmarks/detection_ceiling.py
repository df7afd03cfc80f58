"""How far is the held-out figure from what the same classifier reaches in family, and
where are visible microbleeds lost? (issue 11; a measurement, nothing here is shipped)

``ceiling``
    The shipped recipe (:func:`cmbprep.testing.detector_training.fit_model`: trees,
    Platt map, accept thresholds) fitted on the training scans of *every* family A-F,
    the benchmark's held-out family D included, and calibrated and thresholded on their
    validation scans; measured on each family's 16 validation scans (A-F in family, G
    and H still unseen), beside the shipped model on the same scans. Where the in-family
    fit is no better than the shipped model on D, the held-out figure is limited by what
    the features can tell apart, not by the family being new.
``lost``
    Every visible microbleed (phantom truth, minimum relative signal below 0.5) of the
    validation scans and of all scans of D, G and H, with what the shipped model does
    with its best candidate: no candidate, screened out (first reason), rejected (score
    below the review score), left for review, accepted; by apparent diameter.

Reads the candidate tables of a training cache (``python -m
cmbprep.testing.detector_training --cache DIR --collect-only``); about 3 minutes on one
core::

    python benchmarks/detection_ceiling.py --cache /work/train/cache9 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cmbprep.algorithms.detection.classifier import load_model
from cmbprep.testing import detector_training as dt

#: Apparent-diameter classes (mm) of the ``lost`` table.
SIZE_EDGES = (0.0, 2.0, 3.0, 5.0, np.inf)
SIZE_LABELS = ("< 2 mm", "2-3 mm", "3-5 mm", ">= 5 mm")

#: A microbleed is visible when its darkest voxel is below this relative signal (the
#: benchmark's truth).
VISIBLE_BELOW = 0.5


def in_family_ceiling(train, validation, shipped):
    """F1, sensitivity and false positives per scan on each family's validation scans:
    of a fit on all families A-F (``in_family``) and of ``shipped``."""
    (train_c, _), (val_c, val_t) = train, validation
    families = dt.model_families(train_c["family"].unique())
    parts = dt.fit_model(train_c[train_c["family"].isin(families)],
                         val_c[val_c["family"].isin(families)], val_t)
    model = {"phase": parts["phase"], "no_phase": parts["no_phase"]}
    rows = {}
    for family in sorted(val_c["family"].unique()):
        cand = val_c[val_c["family"] == family]
        rows[family] = {name: dt._compact(dt.evaluate_system(cand, val_t, m)["all"])
                        for name, m in (("in_family", model), ("shipped", shipped))}
    return rows


def fate_of_visible_microbleeds(cand, truths, model):
    """One row per visible microbleed: its family, apparent diameter and ``fate``."""
    cand = cand.reset_index(drop=True)
    cand = cand.assign(score=dt.system_scores(cand, model),
                       truth_index=pd.to_numeric(cand["truth_row"], errors="coerce"))
    rows = []
    for (family, seed), c in cand.groupby(["family", "seed"]):
        part = model["phase" if bool(c["has_phase"].iloc[0]) else "no_phase"]
        truth = truths[(family, seed)].reset_index(drop=True)
        on_cmb = c[c["truth"] == "cmb"]
        visible = (truth["kind"] == "cmb") & (truth["min_relative_signal"] < VISIBLE_BELOW)
        for index in np.flatnonzero(visible.to_numpy()):
            mine = on_cmb[on_cmb["truth_index"] == index]
            if not len(mine):
                fate = "no candidate"
            elif mine["screened_out"].all():
                reason = str(mine["reason"].iloc[0]).removeprefix("screened:")
                fate = "screened: " + reason.split("+")[0]
            else:
                score = mine.loc[~mine["screened_out"], "score"].max()
                fate = ("accepted" if score >= part["accept_score"] else
                        "review" if score >= part["review_score"] else "rejected")
            rows.append({"family": family, "seed": int(seed),
                         "apparent_diameter_mm": float(truth["apparent_diameter_mm"][index]),
                         "fate": fate})
    out = pd.DataFrame(rows)
    out["size"] = pd.cut(out["apparent_diameter_mm"], SIZE_EDGES, right=False,
                         labels=SIZE_LABELS)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", help="classifier file (default: the packaged one)")
    parser.add_argument("--json", help="write both tables here")
    args = parser.parse_args(argv)
    shipped = dt.trees_only(load_model(args.model))
    train = dt.collect(dt.scan_list("train"), args.cache)
    validation = dt.collect(dt.scan_list("validation"), args.cache)
    ceiling = in_family_ceiling(train, validation, shipped)
    print("validation scans (16 per family): F1 / sensitivity / FP per scan")
    for family, r in ceiling.items():
        print(f"{family}: " + "; ".join(
            f"{name} {m['f1']:.3f} / {m['sensitivity']:.3f} / {m['fp_per_scan']:.2f}"
            for name, m in r.items()))
    all_c, all_t = dt._pooled(train, validation)
    val_scans = set(zip(validation[0]["family"], validation[0]["seed"]))
    unseen = all_c["family"].isin(["D", *dt.TEST_FAMILIES])
    in_val = pd.Series([k in val_scans for k in zip(all_c["family"], all_c["seed"])],
                       index=all_c.index)
    tables = {}
    for label, sel in (("validation scans of A-C, E, F", in_val & ~unseen),
                       ("all scans of D, G and H", unseen)):
        fate = fate_of_visible_microbleeds(all_c[sel], all_t, shipped)
        table = pd.crosstab(fate["size"], fate["fate"], margins=True, margins_name="all")
        print(f"\nvisible microbleeds, {label}:\n{table.to_string()}")
        tables[label] = table.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps({"ceiling": ceiling, "lost": tables},
                                              indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
