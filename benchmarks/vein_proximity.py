"""How close do the simulated microbleeds come to veins?

For every scan of the classifier's cohorts (``cmbprep.testing.detector_training``) whose
truth table is in ``--cache``, each microbleed's gap to the nearest vein: the distance from
its centre to the vein's centre line, minus the vein's radius and the microbleed's radius
(template space, mm; veins from :func:`~cmbprep.testing.phantom.veins.cached_veins` with
the scan's seed and settings). Also the angle of that vein's local direction to the
template's z axis (B0 before the head pose and slice tilt, so only approximate).

Reported per family: the number of microbleeds, gap quantiles, how many lie within 2 and
3 mm of a vein, and within 3 mm of a vein of radius >= 0.5 mm at more than 60 degrees to z
(the setting of ``tests/test_vessel_scenes.py``'s perpendicular scene).

Usage::

    python benchmarks/vein_proximity.py --cache DIR [--csv OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cmbprep.testing.detector_training import COHORTS, scan_list
from cmbprep.testing.phantom.veins import cached_veins, resample_polyline


def microbleed_gaps(spec, truth):
    """Gap (mm) of each microbleed of ``truth`` to the nearest vein surface of ``spec``'s
    anatomy, that vein's radius and its angle (degrees) to the template z axis."""
    cfg = spec.config
    points, radii, directions = [], [], []
    for line, radius in cached_veins(spec.sim_seed, cfg.n_veins, tuple(cfg.vein_radius_mm),
                                     cfg.vein_model):
        q = resample_polyline(line, 0.5)
        points.append(q)
        radii.append(np.full(len(q), radius))
        directions.append(np.gradient(q, axis=0) if len(q) > 1 else np.zeros_like(q))
    points, radii = np.concatenate(points), np.concatenate(radii)
    directions = np.concatenate(directions)
    centres = truth[["mni_x", "mni_y", "mni_z"]].to_numpy(float)
    dist, idx = cKDTree(points).query(centres, k=min(200, len(points)))
    surface = dist - radii[idx]
    nearest = idx[np.arange(len(centres)), np.argmin(surface, axis=1)]
    gap = surface.min(axis=1) - truth["radius_mm"].to_numpy(float)
    d = directions[nearest]
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    return gap, radii[nearest], np.degrees(np.arccos(np.clip(np.abs(d[:, 2]), 0, 1)))


def proximity_table(cache):
    """One row per microbleed of the cached cohorts: family, seed, gap, vein radius, angle."""
    rows = []
    for cohort in COHORTS:
        for spec in scan_list(cohort):
            csv = Path(cache) / f"{spec.family}_{spec.seed}.csv"
            if not csv.exists():
                continue
            truth = pd.read_csv(csv)
            truth = truth[truth["kind"] == "cmb"]
            if truth.empty:
                continue
            gap, vein_r, angle = microbleed_gaps(spec, truth)
            rows += [{"family": spec.family, "seed": spec.seed, "gap_mm": g,
                      "vein_radius_mm": r, "angle_deg": a}
                     for g, r, a in zip(gap, vein_r, angle)]
    return pd.DataFrame(rows)


def summarise(table):
    def block(df):
        close = (df["gap_mm"] < 3.0) & (df["vein_radius_mm"] >= 0.5)
        return {"microbleeds": int(len(df)),
                "gap_median_mm": round(float(df["gap_mm"].median()), 2),
                "gap_p5_mm": round(float(df["gap_mm"].quantile(0.05)), 2),
                "within_2mm": int((df["gap_mm"] < 2.0).sum()),
                "within_3mm": int((df["gap_mm"] < 3.0).sum()),
                "within_3mm_of_a_vein_r_ge_0.5_over_60deg": int(
                    (close & (df["angle_deg"] > 60)).sum())}

    out = {f: block(g) for f, g in table.groupby("family")}
    out["learned (A B C E F)"] = block(table[table["family"].isin(list("ABCEF"))])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="detector_training cache directory")
    ap.add_argument("--csv", help="write the per-microbleed table here")
    args = ap.parse_args(argv)
    table = proximity_table(args.cache)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(json.dumps(summarise(table), indent=1))


if __name__ == "__main__":
    main()
