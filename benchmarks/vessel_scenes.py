"""Microbleeds beside veins, and veins alone, over a grid of small physical scenes.

The test suite pins a few scenes (``tests/test_vessel_scenes.py``: a 1.6 mm microbleed
3.5 mm from a 0.6 mm vein at 0 or 90 degrees to B0; a vein alone at 0, 45, 90 degrees).
This benchmark asks the same questions over a grid, so that a classifier is not judged
on one scene: vein angle to B0 0-90 degrees, vein radius 0.4 and 0.9 mm, microbleed
radius 0.6 and 1.0 mm, a gap of 1.5, 2.5 or 4 mm between the microbleed's and the vein's
surfaces, two noise seeds. Scenes come from :func:`cmbprep.testing.scenes.vessel_scene`
(dipole fields, intravoxel dephasing, noise: a generator the classifier never learns
from) and run through the real SWI chain and detector, with phase.

Reported, per model: the share of microbleeds accepted (``cmb`` within 2 mm of the
centre), the share shown to a rater (``cmb`` or ``review``), their median score, by angle
and by gap; and the share of vein-only scenes with an accepted candidate on the vein.

Usage::

    python benchmarks/vessel_scenes.py [--model FILE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time

import numpy as np
import pandas as pd

from cmbprep.algorithms.detection import find_candidates, merge_and_score
from cmbprep.algorithms.detection.analysis import analyse_candidates
from cmbprep.algorithms.swi import process_swi
from cmbprep.testing.scenes import vessel_scene

ANGLES_DEG = (0, 30, 45, 60, 75, 90)
VEIN_RADII_MM = (0.4, 0.9)
SPHERE_RADII_MM = (0.6, 1.0)
SURFACE_GAPS_MM = (1.5, 2.5, 4.0)
SEEDS = (1, 2)


def _candidates(scene, models):
    """The scene's candidate table under each model (None: the packaged one), as
    :func:`~cmbprep.algorithms.detection.detect_cmbprep` gives it; the candidates are
    found and analysed once, then merged and scored per model."""
    out = process_swi(scene.magnitude, scene.phase, scene.affine, input_kind="gre",
                      echo_times=list(scene.echo_times_s), phase_units="rad",
                      handedness="left", n_threads=1)
    images = (out["swi"], out["magnitude"], scene.brain)
    context = find_candidates(out["swi"], scene.brain, scene.affine,
                              filtered_phase=out["filtered_phase"], magnitude=out["magnitude"])
    analysed = analyse_candidates(context)
    tables = {}
    for model in models:
        parameters = dict(context.parameters)
        if model is not None:
            parameters["model"] = str(model)
        tables[model] = merge_and_score(dataclasses.replace(context, parameters=parameters),
                                        analysed, images=images).candidates
    return tables


def _distance_to_axis_mm(cand, scene):
    vox = np.diag(scene.affine)[:3]
    pts = (cand[["i", "j", "k"]].to_numpy(float) - scene.vein_point_vox) * vox
    along = pts @ scene.vein_direction
    return np.linalg.norm(pts - along[:, None] * scene.vein_direction, axis=1)


def microbleed_rows(models):
    """One row per scene with a microbleed and model: its best candidate within 2 mm."""
    rows = []
    for angle, vein_r, sphere_r, gap, seed in itertools.product(
            ANGLES_DEG, VEIN_RADII_MM, SPHERE_RADII_MM, SURFACE_GAPS_MM, SEEDS):
        offset = vein_r + sphere_r + gap
        scene = vessel_scene(angle, vein_radius_mm=vein_r, sphere_radius_mm=sphere_r,
                             sphere_offset_mm=offset, seed=100 * seed + angle)
        for model, cand in _candidates(scene, models).items():
            vox = np.diag(scene.affine)[:3]
            dist = np.linalg.norm(
                (cand[["i", "j", "k"]].to_numpy(float) - scene.sphere_vox) * vox, axis=1)
            near = cand[dist <= 2.0]
            best = near.sort_values("score").iloc[-1] if len(near) else None
            on_vein = (_distance_to_axis_mm(cand, scene) <= vein_r + 1.0) & (dist > 2.5)
            rows.append({"model": model, "angle": angle, "vein_radius_mm": vein_r,
                         "sphere_radius_mm": sphere_r, "gap_mm": gap, "seed": seed,
                         "score": np.nan if best is None else float(best["score"]),
                         "status": "missed" if best is None else str(best["status"]),
                         "vein_accepted": bool((on_vein & (cand["status"] == "cmb")).any())})
    return pd.DataFrame(rows)


def vein_rows(models):
    """One row per vein-only scene and model: is any candidate on the vein accepted?"""
    rows = []
    for angle, vein_r, seed in itertools.product(ANGLES_DEG, VEIN_RADII_MM, SEEDS):
        scene = vessel_scene(angle, vein_radius_mm=vein_r, seed=100 * seed + angle)
        for model, cand in _candidates(scene, models).items():
            on_vein = _distance_to_axis_mm(cand, scene) <= 3.0
            rows.append({"model": model, "angle": angle, "vein_radius_mm": vein_r,
                         "seed": seed, "candidates_on_vein": int(on_vein.sum()),
                         "accepted": int((on_vein & (cand["status"] == "cmb")).sum())})
    return pd.DataFrame(rows)


def summarise(cmb, veins):
    """Shares accepted / shown and the median score, overall, by angle and by gap."""
    def block(df):
        return {"n": int(len(df)),
                "accepted": round(float((df["status"] == "cmb").mean()), 3),
                "shown": round(float(df["status"].isin(["cmb", "review"]).mean()), 3),
                "median_score": round(float(df["score"].median()), 3)}

    return {"microbleeds": block(cmb),
            "by_angle": {str(a): block(g) for a, g in cmb.groupby("angle")},
            "by_gap_mm": {str(g): block(d) for g, d in cmb.groupby("gap_mm")},
            "by_sphere_radius_mm": {str(r): block(d)
                                    for r, d in cmb.groupby("sphere_radius_mm")},
            "vein_accepted_beside_a_microbleed": round(float(cmb["vein_accepted"].mean()), 3),
            "vein_only_scenes": int(len(veins)),
            "vein_only_scenes_with_an_accepted_vein": int((veins["accepted"] > 0).sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="*", default=[None],
                    help="classifier JSON files (default: the packaged model)")
    ap.add_argument("--json", help="write the summaries here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cmb, veins = microbleed_rows(args.model), vein_rows(args.model)
    out = {"seconds": round(time.perf_counter() - t0, 1)}
    for model in args.model:
        name = "packaged" if model is None else str(model)
        out[name] = summarise(cmb[cmb["model"].map(lambda m: m == model)],
                              veins[veins["model"].map(lambda m: m == model)])
        print(name, json.dumps(out[name], indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
