"""What happens to the visible microbleeds, by apparent size and slice thickness (issue 11;
a measurement for docs/outputs.rst, "How far to trust the counts")

Every visible microbleed (noise-free signal below half at the longest echo) of the cached
training-cache scans is followed to the fate of its best candidate under a classifier
model, as ``benchmarks/detection_ceiling.py`` does (its ``fate_of_visible_microbleeds``):
accepted, left for review, rejected, or no candidate / screened out. Scans are grouped as
the project validates: ``held-out D``, ``test G, H`` (never in a fit), ``validation`` (new
seeds of the training families), ``training``.
Direct mode (the detector on the cached SWIs, as ``cmbprep.testing.detector_training``
scores), not the CLI. Reads the cache (``python -m cmbprep.testing.detector_training
--cache DIR``); about 20 s::

    python benchmarks/sensitivity_by_slice.py --cache /work/train/cache14
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cmbprep.algorithms.arrays import voxel_sizes
from cmbprep.algorithms.detection.classifier import load_model
from cmbprep.testing import detector_training as dt
from detection_ceiling import fate_of_visible_microbleeds  # the sibling benchmark

SLICE_BINS_MM = [0.0, 1.25, 1.75, 2.25, 3.5]
FATES = ("accepted", "review", "rejected", "no candidate or screened out")


def scan_group(family, seed, validation):
    if family == dt.HELD_OUT_FAMILY:
        return f"held-out {family}"
    if family in dt.TEST_FAMILIES:
        return "test " + ", ".join(dt.TEST_FAMILIES)
    return "validation" if (family, seed) in validation else "training"


def lesion_fates(cache, model):
    """One row per visible microbleed: group, slice thickness, apparent size and fate
    (:func:`detection_ceiling.fate_of_visible_microbleeds`)."""
    validation = {(s.family, s.seed) for s in dt.scan_list("validation")}
    cand, truths = dt._pooled(dt.collect(dt.scan_list("train"), cache),
                              dt.collect(dt.scan_list("validation"), cache))
    fates = fate_of_visible_microbleeds(cand, truths, model)
    slice_mm = {}
    for family, seed in set(zip(fates["family"], fates["seed"])):
        with np.load(Path(cache) / f"{family}_{seed}.npz") as d:
            slice_mm[(family, seed)] = float(np.max(voxel_sizes(d["affine"])))
    return fates.assign(
        group=[scan_group(f, s, validation) for f, s in zip(fates["family"], fates["seed"])],
        slice_mm=[slice_mm[k] for k in zip(fates["family"], fates["seed"])],
        fate=fates["fate"].where(fates["fate"].isin(FATES[:3]), FATES[3]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", help="classifier file (default: the packaged one)")
    parser.add_argument("--csv", help="write the per-microbleed rows here")
    args = parser.parse_args(argv)
    df = lesion_fates(args.cache, dt.trees_only(load_model(args.model)))
    if args.csv:
        df.to_csv(args.csv, index=False)
    df["size"] = np.where(df["apparent_diameter_mm"] >= 3, ">= 3 mm", "< 3 mm")
    df["slices"] = pd.cut(df["slice_mm"], SLICE_BINS_MM).astype(str)
    print("Fate of each visible microbleed's best candidate (share of the group):")
    for keys, part in df.groupby(["group", "size"], sort=True):
        counts = part["fate"].value_counts()
        print(f"  {keys[0]:<12} {keys[1]:<8} n={len(part):4d}  " + "  ".join(
            f"{f} {counts.get(f, 0) / len(part):.2f}" for f in FATES))
    print("Accepted (and accepted or review) by slice thickness (mm):")
    for keys, part in df.groupby(["group", "size", "slices"], sort=True):
        accepted = (part["fate"] == "accepted").mean()
        offered = part["fate"].isin(["accepted", "review"]).mean()
        print(f"  {keys[0]:<12} {keys[1]:<8} {keys[2]:<12} n={len(part):4d}  "
              f"accepted {accepted:.2f}  accepted or review {offered:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
