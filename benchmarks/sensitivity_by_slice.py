"""What happens to the visible microbleeds, by apparent size and slice thickness (issue 11;
a measurement for docs/outputs.rst, "How far to trust the counts")

Every visible microbleed (noise-free signal below half at the longest echo) of the cached
training-cache scans is followed to the fate of its best candidate under a classifier
model: ``cmb`` (accepted), ``review``, ``rejected``, or ``none`` (no candidate, or
screened out). Scans are grouped as the project validates: ``held-out D``, ``test G, H``
(never in a fit), ``validation`` (new seeds of the training families), ``training``.
Direct mode (the detector on the cached SWIs, as ``cmbprep.testing.detector_training``
scores), not the CLI. Reads the cache (``python -m cmbprep.testing.detector_training
--cache DIR``); about 20 s::

    python benchmarks/sensitivity_by_slice.py --cache /work/train/cache14
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.detection import CMBPREP_PARAMETERS, assign_status
from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
from cmbprep.testing import detector_training as dt

SLICE_BINS_MM = [0.0, 1.25, 1.75, 2.25, 3.5]
FATES = ("cmb", "review", "rejected", "none")


def scan_group(family, seed, validation):
    if family == dt.HELD_OUT_FAMILY:
        return f"held-out {family}"
    if family in ("G", "H"):
        return "test G, H"
    return "validation" if (family, seed) in validation else "training"


def lesion_fates(cache, model):
    """One row per visible microbleed: group, slice thickness, apparent size, fate."""
    validation = {(s.family, s.seed) for s in dt.scan_list("validation")}
    specs = dt.scan_list("train") + dt.scan_list("validation")
    cand, truths = dt.collect(specs, cache, 1)
    cand = cand.reset_index(drop=True)
    scores = dt.system_scores(cand, model)
    rows = []
    for (family, seed), index in cand.groupby(["family", "seed"]).groups.items():
        scan = cand.loc[index].reset_index(drop=True)
        part = model["phase" if scan["has_phase"].iloc[0] else "no_phase"]
        assign_status(scan, scores[np.asarray(index)], ["n/a"] * len(scan),
                      part["accept_score"], min(part["review_score"], part["accept_score"]),
                      CMBPREP_PARAMETERS["max_accept_diameter_mm"])
        with np.load(Path(cache) / f"{family}_{seed}.npz") as d:
            slice_mm = float(np.max(voxel_sizes(d["affine"])))
        for r, lesion in truths[(family, seed)].iterrows():
            if lesion["kind"] != "cmb" or not lesion["apparent_diameter_mm"] > 0:
                continue
            on = scan[(scan["truth_row"] == r) & (scan["truth"] == "cmb")
                      & ~scan["screened_out"]]
            fate = next((f for f in FATES[:3] if (on["status"] == f).any()), "none")
            rows.append({"group": scan_group(family, seed, validation), "family": family,
                         "slice_mm": slice_mm,
                         "apparent_diameter_mm": float(lesion["apparent_diameter_mm"]),
                         "fate": fate})
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--csv", help="write the per-microbleed rows here")
    args = parser.parse_args(argv)
    model = json.loads(Path(args.model).read_text())
    df = lesion_fates(args.cache, model)
    if args.csv:
        df.to_csv(args.csv, index=False)
    df["size"] = np.where(df["apparent_diameter_mm"] >= 3, ">= 3 mm", "< 3 mm")
    df["slices"] = pd.cut(df["slice_mm"], SLICE_BINS_MM).astype(str)
    pd.set_option("display.width", 160)
    print("Fate of each visible microbleed's best candidate (share of the group):")
    for keys, part in df.groupby(["group", "size"], sort=True):
        counts = part["fate"].value_counts()
        print(f"  {keys[0]:<12} {keys[1]:<8} n={len(part):4d}  " + "  ".join(
            f"{f} {counts.get(f, 0) / len(part):.2f}" for f in FATES))
    print("Accepted (and accepted or review) by slice thickness (mm):")
    for keys, part in df.groupby(["group", "size", "slices"], sort=True):
        accepted = (part["fate"] == "cmb").mean()
        offered = part["fate"].isin(["cmb", "review"]).mean()
        print(f"  {keys[0]:<12} {keys[1]:<8} {keys[2]:<12} n={len(part):4d}  "
              f"accepted {accepted:.2f}  accepted or review {offered:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
