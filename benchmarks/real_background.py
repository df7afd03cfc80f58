"""Real background: simulated lesions injected into romeo-small (issue 11; run by hand).

    .venv/bin/python benchmarks/real_background.py [--rounds 20] [--input-kind megre|swi]
                                                    [--megre-echoes longest|fit] [--json OUT]
                                                    [--model MODEL.json]

romeo-small (tests/data/romeo-small, MIT; a 51x51x41 crop of a real 3-echo GRE with veins
and no microbleeds) is the background. Each round (seed 0..N-1) injects 5 lesions
(:func:`cmbprep.testing.injection.random_lesions`: radius 0.2-1.5 mm, dchi 0.4-3 ppm; in
about half the rounds the fifth is a calcification, radius 0.5-1.5 mm, dchi -2..-0.5 ppm)
at random positions of the untouched crop's head mask (computed on the RSS of its echoes,
whichever echoes the SWI chain uses, so that both ``--megre-echoes`` get the same
lesions), >= 3 mm + radius from its edge
(the crop border counts as edge), >= 2 mm + radius from dark voxels (veins: last-echo
magnitude < 0.8 x its local mean) and 8 mm apart, with the phantom's physics
(:func:`cmbprep.testing.injection.inject_lesions`). Then :func:`process_swi` (``megre``,
``--megre-echoes``, default the longest echo alone as in the pipeline) and
:func:`detect_cmbprep` (default parameters: the packaged classifier) on the head mask of
the processed crop; ``--input-kind swi`` gives the detector the same SWI without the
filtered phase.

Acquisition assumptions (romeo-small records neither): 3 T and TE 5/10/15 ms (the 1:2:3
spacing of the upstream tests). The phase sign convention of the injection is that of the
crop (-1, phase = -gamma dB TE: both the SWI chain's handedness detection and the
correlation of the filtered phase with the field predicted from its dark structures say
so). The crop keeps its own noise; where a lesion lowers the signal, complex noise is added
back at the level estimated from the crop (see :func:`noise_sigma`).

Scoring (:func:`cmbprep.testing.scoring.label_detections`, one-to-one within max(3 mm,
apparent radius + 1.5 mm)): sensitivity over *visible* microbleeds (the phantom's
apparent diameter > 0) by apparent diameter bin, for accepted candidates (``cmb``) and
for accepted or review; false positives = accepted candidates matched to no microbleed
(a calcification match counts as a false positive too, and is also counted apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cmbprep.algorithms.detection import PHASE_SIGN_OF_HANDEDNESS, detect_cmbprep
from cmbprep.algorithms.swi import MEGRE_ECHOES, prepare_magnitude, process_swi
from cmbprep.testing.injection import inject_lesions, random_lesions
from cmbprep.testing.scoring import label_detections

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "romeo-small"
ECHO_TIMES = [0.005, 0.010, 0.015]
FIELD_T = 3.0
PHASE_SIGN = -1
BINS = [("<2 mm", 0.0, 2.0), ("2-3 mm", 2.0, 3.0), (">=3 mm", 3.0, np.inf)]


def load():
    """Magnitude, phase (rad) (X, Y, Z, 3) float32 and the affine of romeo-small."""
    mag = nib.load(DATA / "Mag.nii.gz")
    phase = np.asarray(nib.load(DATA / "Phase.nii.gz").dataobj, np.float32)
    phase = phase / np.abs(phase).max() * np.float32(np.pi)  # stored scaled, see README
    return np.asarray(mag.dataobj, np.float32), phase, mag.affine


def dark_voxels(magnitude):
    """Dark (vein) voxels: last-echo magnitude below 0.8 x its local mean."""
    last = magnitude[..., -1].astype(float)
    return last < 0.8 * ndi.gaussian_filter(last, (6, 6, 3))


def noise_sigma(magnitude, mask):
    """Rough noise level of the crop (no air in it): robust SD of the first-echo
    magnitude minus its 3x3x3 mean in the mask, per real/imaginary channel. Anatomy
    texture inflates it, so the noise restored inside lesions is, if anything, too high."""
    m = magnitude[..., 0].astype(float)
    res = (m - ndi.uniform_filter(m, 3))[mask]
    mad = np.median(np.abs(res - np.median(res)))
    return float(1.4826 * mad * np.sqrt(27 / 26))


def placement_mask(magnitude, affine):
    """Head mask of the RSS of the echoes (the SWI chain's, with every echo combined)."""
    return prepare_magnitude(magnitude, affine, input_kind="megre", echo_times=ECHO_TIMES,
                             has_phase=False)[2]


def run_detector(magnitude, phase, affine, input_kind, megre_echoes="longest", model=None):
    out = process_swi(magnitude, phase, affine, input_kind="megre", echo_times=ECHO_TIMES,
                      phase_units="rad", megre_echoes=megre_echoes, n_threads=1)
    fp = out["filtered_phase"] if input_kind == "megre" else None
    # as in the pipeline: the SWI chain's handedness cross-checks the detector's phase sign
    handedness = out["meta"].get("Handedness") if fp is not None else None
    parameters = ({"phase_sign_reference": PHASE_SIGN_OF_HANDEDNESS[handedness]}
                  if handedness in PHASE_SIGN_OF_HANDEDNESS else {})
    if model is not None:
        parameters["model"] = str(model)
    result = detect_cmbprep(out["swi"], out["head_mask"], affine, filtered_phase=fp,
                            magnitude=out["magnitude"], parameters=parameters)
    return result


def injected_rounds(magnitude, phase, affine, rounds, *, phase_sign=PHASE_SIGN,
                    input_kind="megre", megre_echoes="longest", model=None):
    """Each round (seed 0..``rounds``-1): 5 lesions injected into the crop as described
    above, then the SWI chain and the detector. Yields ``(seed, truth, result)``."""
    mask0 = placement_mask(magnitude, affine)
    avoid, sigma = dark_voxels(magnitude), noise_sigma(magnitude, mask0)
    for seed in range(rounds):
        rng = np.random.default_rng(seed)
        n_calc = int(rng.random() < 0.5)
        specs = random_lesions(mask0, affine, 5, rng, radius_mm=(0.2, 1.5),
                               dchi_ppm=(0.4, 3.0), min_spacing_mm=8.0, avoid=avoid,
                               n_calcifications=n_calc)
        m, p, truth = inject_lesions(magnitude, phase, affine, ECHO_TIMES, FIELD_T, specs,
                                     phase_sign=phase_sign, noise_sigma=sigma, rng=rng)
        yield seed, truth, run_detector(m, p, affine, input_kind, megre_echoes, model)


def score_round(candidates, truth):
    """Per-lesion rows (found accepted / found accepted-or-review) and per-crop counts."""
    acc = candidates[candidates["status"] == "cmb"].reset_index(drop=True)
    shown = candidates[candidates["status"].isin(["cmb", "review"])].reset_index(drop=True)
    lab_a, which_a = label_detections(acc, truth)
    lab_s, which_s = label_detections(shown, truth)
    found_a = set(which_a[np.isin(lab_a, ["cmb", "invisible_cmb"])])
    found_s = set(which_s[np.isin(lab_s, ["cmb", "invisible_cmb"])])
    rows = [{"apparent_diameter_mm": float(t.apparent_diameter_mm),
             "radius_mm": float(t.radius_mm), "dchi_ppm": float(t.dchi_ppm),
             "found": r in found_a, "found_or_review": r in found_s}
            for r, t in truth.reset_index(drop=True).iterrows() if t.kind == "cmb"]
    counts = {"accepted": len(acc), "review": int((candidates["status"] == "review").sum()),
              "false_positives": int(np.sum(np.isin(lab_a, ["none", "calcification"]))),
              "review_not_lesion": int(np.sum(np.isin(lab_s, ["none", "calcification"]))
                                       - np.sum(np.isin(lab_a, ["none", "calcification"]))),
              "calcifications": int((truth["kind"] == "calcification").sum()),
              "calcifications_accepted": int(np.sum(lab_a == "calcification"))}
    return rows, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--input-kind", choices=["megre", "swi"], default="megre")
    ap.add_argument("--megre-echoes", choices=MEGRE_ECHOES, default="longest",
                    help="the SWI chain's echoes (as the pipeline's --megre-echoes)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--model", type=Path, default=None,
                    help="classifier model file (default: the packaged one)")
    ap.add_argument("--phase-sign", type=int, choices=[1, -1], default=PHASE_SIGN,
                    help="phase convention of the injected lesions (default: the crop's)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    mag, phase, affine = load()
    base = run_detector(mag, phase, affine, args.input_kind, args.megre_echoes, args.model)
    mask0 = placement_mask(mag, affine)
    untouched = {"accepted": int((base.candidates["status"] == "cmb").sum()),
                 "review": int((base.candidates["status"] == "review").sum()),
                 "candidates": len(base.candidates)}
    sigma = noise_sigma(mag, mask0)
    lesions, crops = [], []
    for seed, truth, result in injected_rounds(
            mag, phase, affine, args.rounds, phase_sign=args.phase_sign,
            input_kind=args.input_kind, megre_echoes=args.megre_echoes, model=args.model):
        rows, counts = score_round(result.candidates, truth)
        for r in rows:
            r["seed"] = seed
        counts["seed"] = seed
        counts["phase_used"] = bool(result.parameters.get("phase_used", False))
        counts["lesions"] = len(truth)
        lesions += rows
        crops.append(counts)
    les = pd.DataFrame(lesions)
    crop = pd.DataFrame(crops)
    vis = les["apparent_diameter_mm"] > 0

    def sens(sel, col):
        n = int(sel.sum())
        k = int(les.loc[sel, col].sum())
        return f"{k}/{n} ({k / n:.0%})" if n else "n/a"

    summary = {"rounds": args.rounds, "input_kind": args.input_kind,
               "megre_echoes": args.megre_echoes,
               "field_strength_t": FIELD_T, "echo_times_s": ECHO_TIMES,
               "phase_sign": args.phase_sign, "noise_sigma": sigma, "untouched": untouched,
               "model": str(args.model) if args.model else "packaged",
               "n_cmbs": len(les), "n_visible": int(vis.sum()),
               "wall_s": round(time.perf_counter() - t0, 1)}
    table = ["| measure | accepted (`cmb`) | accepted or review |", "|---|---|---|"]
    table.append(f"| sensitivity, visible microbleeds | {sens(vis, 'found')} | "
                 f"{sens(vis, 'found_or_review')} |")
    for name, lo, hi in BINS:
        sel = vis & (les["apparent_diameter_mm"] >= lo) & (les["apparent_diameter_mm"] < hi)
        table.append(f"| sensitivity, apparent diameter {name} | {sens(sel, 'found')} | "
                     f"{sens(sel, 'found_or_review')} |")
        summary[f"sensitivity {name}"] = [int(les.loc[sel, "found"].sum()),
                                          int(les.loc[sel, "found_or_review"].sum()),
                                          int(sel.sum())]
    table.append(f"| invisible microbleeds (not scored) found | {sens(~vis, 'found')} | "
                 f"{sens(~vis, 'found_or_review')} |")
    table.append(f"| candidates per crop, mean | {crop['accepted'].mean():.2f} | "
                 f"{crop['review'].mean():.2f} (review) |")
    table.append(f"| false positives per crop, mean (max) | "
                 f"{crop['false_positives'].mean():.2f} ({crop['false_positives'].max()}) | "
                 f"+{crop['review_not_lesion'].mean():.2f} non-lesion review |")
    table.append(f"| calcifications accepted | {crop['calcifications_accepted'].sum()}/"
                 f"{crop['calcifications'].sum()} | |")
    table.append(f"| untouched crop | {untouched['accepted']} accepted | "
                 f"{untouched['review']} review ({untouched['candidates']} candidates) |")
    summary["phase_used_rounds"] = int(crop["phase_used"].sum())
    summary["fp_per_crop"] = float(crop["false_positives"].mean())
    summary["calcifications_accepted"] = [int(crop["calcifications_accepted"].sum()),
                                          int(crop["calcifications"].sum())]
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"romeo-small, {args.rounds} rounds, input kind {args.input_kind}, "
          f"echoes {args.megre_echoes}, phase sign {args.phase_sign:+d}, "
          f"{len(les)} microbleeds ({int(vis.sum())} visible), "
          f"{crop['calcifications'].sum()} calcifications, detector used the phase in "
          f"{int(crop['phase_used'].sum())}/{len(crop)} rounds "
          f"(untouched: {bool(base.parameters.get('phase_used', False))}), "
          f"{summary['wall_s']} s")
    print("\n".join(table))
    if args.json:
        summary["lesions"] = lesions
        summary["crops"] = crops
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
