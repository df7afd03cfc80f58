"""What do the classifier's confident mistakes on unseen families lie on? (issue 11; a
diagnosis, nothing here is shipped)

For the scans of the given families (default the held-out family D and the test families
G and H) in a training cache, the candidates that match no lesion and score at least
``--min-score`` with the model (default the packaged one, fitted without D, G and H) are
located in the phantom that made them: each scan is simulated again from its seed (the
same scan, bit for bit) to read the venous blood fraction and the susceptibility maps.

A candidate is ``on a vein`` when the venous fraction reaches 0.1 within 1 mm of its
centre, ``near a vein`` within 3 mm, else ``elsewhere``. For those on a vein, the vein's
direction is the principal axis of the venous voxels within 3 mm (weighted by their
fraction) and its angle to B0 (scanner z) is reported. The shape features of these
candidates are printed beside those of the small (< 3 mm apparent) microbleeds they are
confused with.

Scans with the most such candidates first, at most ``--max-scans`` (15-25 s each)::

    python benchmarks/false_positive_sources.py --cache /work/train/cache9 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
from cmbprep.testing import detector_training as dt
from cmbprep.testing.phantom.randomise import simulate_scan

SHAPE = ["diameter_mm", "contrast", "magnitude_contrast", "elongation", "b0_aspect",
         "elongation_perp_b0", "continuation_fraction", "tube_length_mm",
         "paramagnetic_evidence", "dipole_vs_cylinder", "dipole_phase_at_radius"]


def vein_direction_angle(vein_points_mm, vein_weights, centre_mm, radius_mm=3.0):
    """Angle (degrees, 0-90) between B0 (scanner z) and the principal axis of the venous
    points (scanner-axis mm, weighted by their venous fraction) within ``radius_mm`` of
    ``centre_mm`` (NaN with fewer than 3 such points)."""
    near = np.linalg.norm(vein_points_mm - centre_mm, axis=1) <= radius_mm
    if near.sum() < 3:
        return float("nan")
    pts, w = vein_points_mm[near], vein_weights[near]
    d = pts - np.average(pts, axis=0, weights=w)
    axis = np.linalg.eigh((d * w[:, None]).T @ d / w.sum())[1][:, -1]
    return float(np.degrees(np.arccos(min(1.0, abs(axis[2])))))


def locate(spec, rows):
    """Where ``rows`` (candidates of one scan) lie in the re-simulated phantom."""
    phantom = simulate_scan(spec).phantom
    vein = phantom.vein_fraction
    distance = ndi.distance_transform_edt(vein < 0.1, sampling=voxel_sizes(phantom.affine))
    to_mm = np.asarray(phantom.affine)[:3, :3]  # the translation cancels in the distances
    vein_idx = np.argwhere(vein >= 0.1)
    vein_mm, vein_w = vein_idx @ to_mm.T, vein[tuple(vein_idx.T)]
    out = []
    for _, r in rows.iterrows():
        ijk = tuple(np.clip(np.round([r.i, r.j, r.k]).astype(int), 0,
                            np.array(vein.shape) - 1))
        d = float(distance[ijk])
        where = "on a vein" if d <= 1.0 else ("near a vein" if d <= 3.0 else "elsewhere")
        angle = (vein_direction_angle(vein_mm, vein_w, to_mm @ np.array([r.i, r.j, r.k]))
                 if where == "on a vein" else float("nan"))
        out.append({"where": where, "distance_to_vein_mm": d,
                    "susceptibility_ppm": float(phantom.susceptibility_ppm[ijk]),
                    "vein_angle_to_b0_deg": angle})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--families", nargs="+", default=["D", "G", "H"])
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--max-scans", type=int, default=12)
    parser.add_argument("--json", help="write the per-candidate table here")
    args = parser.parse_args(argv)
    specs = {(s.family, s.seed): s for c in ("train", "validation") for s in dt.scan_list(c)
             if s.family in args.families}
    cand, truths = dt.collect(list(specs.values()), args.cache)
    cand = cand[~cand["screened_out"]].reset_index(drop=True)
    cand["model_score"] = dt.system_scores(
        cand, dt.trees_only(json.loads(Path(args.model).read_text())))
    wrong = cand[(cand["truth"] == "none") & (cand["model_score"] >= args.min_score)]
    per_scan = wrong.groupby(["family", "seed"]).size().sort_values(ascending=False)
    print(f"{len(wrong)} candidates on no lesion score >= {args.min_score} in "
          f"{len(per_scan)} of {len(specs)} scans; locating those of "
          f"{min(args.max_scans, len(per_scan))} scans")
    located = []
    for key in per_scan.index[:args.max_scans]:
        rows = wrong[(wrong["family"] == key[0]) & (wrong["seed"] == key[1])]
        for (_, r), place in zip(rows.iterrows(), locate(specs[key], rows)):
            located.append({"scan": f"{key[0]}_{key[1]}", "input_kind": r["input_kind"],
                            "model_score": r["model_score"], **place,
                            **{k: pd.to_numeric(r[k], errors="coerce") for k in SHAPE}})
    table = pd.DataFrame(located)
    print(table["where"].value_counts().to_string())
    on = table[table["where"] == "on a vein"]
    angles = pd.cut(on["vein_angle_to_b0_deg"], [0, 30, 60, 90], include_lowest=True)
    print("vein angle to B0 (on a vein):\n" + angles.value_counts(sort=False).to_string())
    apparent = [truths[(f, s)].loc[int(i), "apparent_diameter_mm"] if t == "cmb" else np.nan
                for f, s, t, i in zip(cand["family"], cand["seed"], cand["truth"],
                                      cand["truth_row"])]
    small = cand[(cand["truth"] == "cmb") & (np.asarray(apparent) < 3.0)]
    pd.set_option("display.width", 200)
    print("medians: confident mistakes on veins | small microbleeds (all their candidates)")
    print(pd.DataFrame({"mistakes on veins": on[SHAPE].median(),
                        "small microbleeds": small[SHAPE].apply(
                            pd.to_numeric, errors="coerce").median()}).round(2).to_string())
    if args.json:
        Path(args.json).write_text(table.to_json(orient="records", indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
