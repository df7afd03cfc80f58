"""Does a candidate's blooming with echo time tell microbleeds from veins on multi-echo
GRE? (issue 11, "on multi-echo, blooming with TE"; a measurement, nothing here is shipped)

A microbleed is dark beyond its edge because of its own field, so its dark region grows
with TE; a vein piece along B0 has no field along its sides and should not grow across
B0. For every non-screened candidate of the multi-echo (MEGRE) scans of a training cache
(each scan simulated again from its seed, because the cache keeps only the longest echo),
on the relative magnitude of the shortest and of the longest echo (as the detector's
``magnitude_contrast``: 10 mm local background, 0.5 mm smoothing):

``te_blooming``
    ``ln((D_long + 0.5) / (D_short + 0.5)) / ln(TE_long / TE_short)``, with ``D`` the
    darkness integral ``sum(clip(1 - relative magnitude, 0, 1)) x voxel volume`` (mm^3)
    within 2 mm of the lesion radius (radius: half the equal-volume diameter, 0.3-4 mm):
    about 1 where the darkness grows in proportion to TE, 0 where it does not grow.
``te_blooming_across_b0``
    The same on the ring outside the lesion radius and within 2 mm of it, within 60
    degrees of the plane perpendicular to B0 (``|cos theta| < 0.5``; floor 0.2 mm^3).

Reports each one's ROC AUC (visible microbleeds against candidates on no lesion) among
all candidates and in the band where v6 is unsure (score 0.05-0.95), and with ``--fit``
v6's recipe with both as inputs (:func:`classifier_settings.fit_and_measure`; NaN on
scans that are not MEGRE) and the MEGRE scans' F1 beside v6's. About 4 minutes to
simulate the 53 MEGRE scans on 2 cores, 9 more for ``--fit``::

    python benchmarks/megre_blooming.py --cache /work/train/cache9 --fit --json out.json
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cmbprep.algorithms.arrays import b0_direction, box_around, voxel_sizes
from cmbprep.algorithms.detection import CMBPREP_PARAMETERS
from cmbprep.algorithms.detection.classifier import load_model
from cmbprep.algorithms.detection.cmbprep_detector import magnitude_relative_intensity
from cmbprep.testing import detector_training as dt

FEATURES = ("te_blooming", "te_blooming_across_b0")

#: Neighbourhood beyond the lesion radius (mm) and the floors (mm^3) of the two ratios.
REACH_MM = 2.0
FLOOR_MM3 = {"te_blooming": 0.5, "te_blooming_across_b0": 0.2}


def darkness_integrals(relative, center_vox, radius_mm, voxel_size, b0):
    """Darkness integrals (mm^3) of one relative-intensity volume around a candidate:
    within ``radius_mm + REACH_MM`` of the centre, and on the ring from ``radius_mm`` to
    there within 60 degrees of the plane perpendicular to ``b0`` (array-axis unit
    vector)."""
    voxel_size = np.asarray(voxel_size, float)
    outer = radius_mm + REACH_MM
    center = np.asarray(center_vox, float)
    box = box_around(np.rint(center).astype(int), np.ceil(outer / voxel_size).astype(int),
                     relative.shape)
    axes = [(np.arange(b.start, b.stop) - c) * v for b, c, v in zip(box, center, voxel_size)]
    offsets = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    r = np.linalg.norm(offsets, axis=1)
    cos_b0 = np.abs(offsets @ b0) / np.maximum(r, 1e-6)
    dark = np.clip(1.0 - relative[box].ravel(), 0, 1)
    volume = float(np.prod(voxel_size))
    within = r <= outer
    ring = within & (r > radius_mm) & (cos_b0 < 0.5)
    return {"te_blooming": float(dark[within].sum() * volume),
            "te_blooming_across_b0": float(dark[ring].sum() * volume)}


def blooming_exponent(short, long, te_short, te_long, floor):
    """``ln((long + floor) / (short + floor)) / ln(te_long / te_short)``."""
    return float(np.log((long + floor) / (short + floor)) / np.log(te_long / te_short))


def scan_features(args):
    """:data:`FEATURES` of the non-screened candidates of one MEGRE scan."""
    from cmbprep.testing.phantom.randomise import simulate_scan

    cache, spec, cand = args
    sub = simulate_scan(spec)
    te = np.asarray(sub.echo_times_s, float)
    with np.load(Path(cache) / f"{spec.family}_{spec.seed}.npz") as d:
        brain, affine = d["brain"].astype(bool), d["affine"]
    voxel_size = tuple(float(v) for v in voxel_sizes(affine))
    b0 = b0_direction(affine)
    short, long = int(np.argmin(te)), int(np.argmax(te))
    relative = {k: magnitude_relative_intensity(np.asarray(sub.magnitude[..., k], np.float32),
                                                brain, voxel_size, CMBPREP_PARAMETERS)
                for k in (short, long)}
    rows = []
    for _, c in cand.iterrows():
        radius = float(np.clip(c["diameter_mm"] / 2, 0.3, 4.0))
        center = (c["i"], c["j"], c["k"])
        d = {k: darkness_integrals(relative[k], center, radius, voxel_size, b0)
             for k in (short, long)}
        rows.append({"family": spec.family, "seed": spec.seed,
                     "candidate_id": int(c["candidate_id"]),
                     **{f: blooming_exponent(d[short][f], d[long][f], te[short], te[long],
                                             FLOOR_MM3[f]) for f in FEATURES}})
    return rows


def auc_table(cand):
    """ROC AUC of each feature, visible microbleeds against candidates on no lesion."""
    out = {}
    for band, sel in (("all", np.ones(len(cand), bool)),
                      ("v6 unsure (0.05-0.95)", (cand["score"] > 0.05) & (cand["score"] < 0.95))):
        for group, families in (("A-C, E, F", "ABCEF"), ("D, G, H", "DGH")):
            c = cand[sel & cand["family"].isin(list(families))
                     & cand["truth"].isin(["cmb", "none"])]
            y = c["truth"] == "cmb"
            out[f"{band}, {group}"] = {"n_cmb": int(y.sum()), "n_none": int((~y).sum()),
                                      **{f: float(roc_auc_score(y, c[f]))
                                         for f in (*FEATURES, "contrast", "blobness")}}
    return out


def medians(cand):
    """Median of each feature on microbleeds under and over 3 mm (candidate diameter)
    and on candidates on no lesion (all families)."""
    small = pd.to_numeric(cand["diameter_mm"], errors="coerce") < 3.0
    groups = {"median, microbleeds < 3 mm": (cand["truth"] == "cmb") & small,
              "median, microbleeds >= 3 mm": (cand["truth"] == "cmb") & ~small,
              "median, no lesion": cand["truth"] == "none"}
    return {name: {"n": int(sel.sum()), **{f: float(cand.loc[sel, f].median())
                                          for f in FEATURES}}
            for name, sel in groups.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fit", action="store_true",
                        help="also fit v6's recipe with the two features as inputs")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    data = {c: dt.collect(dt.scan_list(c), args.cache) for c in ("train", "validation")}
    all_c, all_t = dt._pooled(data["train"], data["validation"])
    specs = [s for c in ("train", "validation") for s in dt.scan_list(c)
             if s.input_kind == "megre"]
    usable = all_c[~all_c["screened_out"]]
    jobs = [(args.cache, s, usable[(usable["family"] == s.family) & (usable["seed"] == s.seed)])
            for s in specs]
    with Pool(args.jobs) as pool:
        feats = pd.DataFrame([r for rows in pool.map(scan_features, jobs) for r in rows])
    shipped = dt.trees_only(load_model())
    megre = all_c[all_c["input_kind"] == "megre"].reset_index(drop=True)
    megre = megre.assign(score=dt.system_scores(megre, shipped)).merge(
        feats, on=["family", "seed", "candidate_id"], how="inner")
    results = {"auc": auc_table(megre[megre["truth"] != "invisible_cmb"]),
               "median": medians(megre)}
    for name, row in {**results["auc"], **results["median"]}.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in row.items()))
    if args.fit:
        from classifier_settings import fit_and_measure

        key = ["family", "seed", "candidate_id"]
        with_feats = {k: (c.merge(feats, on=key, how="left"), t) for k, (c, t) in data.items()}
        val_scans = set(zip(data["validation"][0]["family"], data["validation"][0]["seed"]))
        pooled = pd.concat([c for c, _ in with_feats.values()], ignore_index=True)
        pooled = pooled[pooled["input_kind"] == "megre"]
        in_val = np.array([k in val_scans for k in zip(pooled["family"], pooled["seed"])])
        groups = {"validation scans of A-C, E, F": in_val & pooled["family"].isin(list("ABCEF")),
                  "D": pooled["family"] == "D", "G and H": pooled["family"].isin(["G", "H"])}

        def megre_f1(model):
            return {name: {m: dt.evaluate_system(pooled[np.asarray(sel)], all_t, mod)["all"]
                           ["visible"]["f1"] for m, mod in (("with", model), ("v6", shipped))}
                    for name, sel in groups.items()}

        fit = fit_and_measure(with_feats, FEATURES, measure=megre_f1)
        results["fit"] = {k: fit[k] for k in ("lofo_f1", "lofo_mean_f1")}
        results["fit"].update({k: fit[k]["f1"] for k in ("D", "G", "H")})
        results["megre_f1"] = fit["measured"]
        print(json.dumps({k: results[k] for k in ("fit", "megre_f1")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
