"""Held-out microbleeds near the brain edge: family D with juxtacortical microbleeds
(issue 11; a measure, nothing here is shipped).

The benchmark's families (D, G, H) keep ``juxtacortical_share`` 0, so their scans hold
almost no microbleed near the brain edge and cannot show how a model treats one
(``benchmarks/edge_distance.py``). This cohort is family D's 48 cache scans (training
and validation seeds) simulated again with ``juxtacortical_share`` (default 0.5): D's
veins and protocol, which the shipped model never learns from; the placement rule is the
one the learned families use, so the cohort is held out in veins and protocol only.

Per model file: the measures a model file records (F1, false positives per scan), and the
share of the visible microbleeds whose centre lies within ``--near-mm`` (3 mm) of the
brain-mask edge that is accepted (and accepted or left for review). The scans are cached in
their own directory (their cache names are those of family D's ordinary scans)::

    .venv/bin/python benchmarks/juxtacortical.py --cache /tmp/juxta --jobs 2 \\
        --model v6=cmbprep/data/models/cmbprep_classifier.json --model new=FILE
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
from cmbprep.testing import detector_training as dt

FAMILY = dt.HELD_OUT_FAMILY


def cohort(share):
    """Family D's training and validation scans with ``juxtacortical_share = share``."""
    out = []
    for c in ("train", "validation"):
        for spec in dt.scan_list(c):
            if spec.family == FAMILY:
                cfg = dataclasses.replace(spec.config, juxtacortical_share=float(share))
                out.append(dataclasses.replace(spec, config=cfg))
    return out


def truth_edge_distance(cache, spec, truth):
    """Distance (mm) of each truth row's centre voxel to the edge of the scan's brain
    mask (the phantom's, which the training chain's detector uses)."""
    with np.load(Path(cache) / f"{spec.family}_{spec.seed}.npz") as d:
        brain, affine = d["brain"].astype(bool), d["affine"]
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
    edge = ndi.distance_transform_edt(brain, sampling=voxel)
    ijk = np.round(truth[["i", "j", "k"]].to_numpy(float)).astype(int)
    ijk = np.clip(ijk, 0, np.array(brain.shape) - 1)
    return edge[tuple(ijk.T)]


def statuses(cand, model):
    """``cand`` with each candidate's status (``cmb``, ``review``, ...) under ``model``
    (:func:`~cmbprep.testing.detector_training.scan_statuses`)."""
    cand = cand.reset_index(drop=True)
    status = pd.Series("", index=cand.index, dtype=object)
    for _, rows, c in dt.scan_statuses(cand, model):
        status.loc[rows] = c["status"].to_numpy()
    return cand.assign(status=status.to_numpy())


def near_edge_found(cand, near):
    """Near-edge visible microbleeds accepted, and accepted or left for review.

    ``near``: DataFrame of ``seed truth_row`` (the visible microbleeds near the edge)."""
    hits = cand[cand["truth"] == "cmb"]
    found = {}
    for name, ok in (("accepted", ["cmb"]), ("accepted_or_review", ["cmb", "review"])):
        sel = hits[hits["status"].isin(ok)]
        got = set(zip(sel["seed"], sel["truth_row"]))
        found[name] = int(sum((s, r) in got for s, r in zip(near["seed"], near["truth_row"])))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="this cohort's own cache directory")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--near-mm", type=float, default=3.0)
    parser.add_argument("--model", action="append", default=None, metavar="NAME=FILE",
                        help="model files to measure (default: the packaged one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    specs = cohort(args.share)
    cand, truths = dt.collect(specs, args.cache, args.jobs)
    near = []
    for spec in specs:
        truth = truths[(spec.family, spec.seed)]
        dist = truth_edge_distance(args.cache, spec, truth)
        visible = ((truth["kind"] == "cmb") & (truth["apparent_diameter_mm"] > 0)).to_numpy()
        for r in np.flatnonzero(visible):
            near.append({"seed": spec.seed, "truth_row": int(r), "edge_mm": float(dist[r]),
                         "lobar": truth.at[r, "mars_category"] == "lobar"})
    lesions = pd.DataFrame(near)
    close = lesions[lesions["edge_mm"] <= args.near_mm]
    print(f"{len(specs)} scans of family {FAMILY}, juxtacortical_share {args.share:g}: "
          f"{len(lesions)} visible microbleeds, {len(close)} within {args.near_mm:g} mm of "
          f"the brain edge ({int(lesions['lobar'].sum())} lobar)")
    models = args.model or [f"packaged={DEFAULT_MODEL_PATH}"]
    results = {"scans": len(specs), "share": args.share, "visible": len(lesions),
               "near_edge": len(close), "models": {}}
    for item in models:
        name, _, path = item.partition("=")
        model = json.loads(Path(path).read_text())
        measured = dt._measures(cand, truths, model)["all"]
        found = near_edge_found(statuses(cand, model), close)
        results["models"][name] = {"f1": measured["f1"],
                                   "fp_per_scan": measured["fp_per_scan"],
                                   "sensitivity": measured["sensitivity"], **found}
        print(f"{name:10s} F1 {measured['f1']:.3f}  FP/scan {measured['fp_per_scan']:.2f}  "
              f"sensitivity {measured['sensitivity']:.3f}  near edge accepted "
              f"{found['accepted']}/{len(close)}, accepted or review "
              f"{found['accepted_or_review']}/{len(close)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
