"""What happens to the visible microbleeds, by apparent size and slice thickness (issue 11;
a measurement for docs/outputs.rst, "How far to trust the counts")

Second, per group of scans and slice thickness, the scans' F1, sensitivity, precision,
false positives and review candidates per scan (the detector's measures of a cohort).

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


def cached_cohorts(cache):
    """Candidates and truths of the training and validation scans of ``cache``, and the
    validation scans' ``(family, seed)``."""
    validation = {(s.family, s.seed) for s in dt.scan_list("validation")}
    cand, truths = dt._pooled(dt.collect(dt.scan_list("train"), cache),
                              dt.collect(dt.scan_list("validation"), cache))
    return cand, truths, validation


def slice_thickness(cache, scans):
    """``(family, seed)`` -> largest voxel size (mm) of each cached scan of ``scans``."""
    out = {}
    for family, seed in scans:
        with np.load(Path(cache) / f"{family}_{seed}.npz") as d:
            out[(family, seed)] = float(np.max(voxel_sizes(d["affine"])))
    return out


def lesion_fates(cand, truths, validation, slice_mm, model):
    """One row per visible microbleed: group, slice thickness, apparent size and fate
    (:func:`detection_ceiling.fate_of_visible_microbleeds`)."""
    fates = fate_of_visible_microbleeds(cand, truths, model)
    return fates.assign(
        group=[scan_group(f, s, validation) for f, s in zip(fates["family"], fates["seed"])],
        slice_mm=[slice_mm[k] for k in zip(fates["family"], fates["seed"])],
        fate=fates["fate"].where(fates["fate"].isin(FATES[:3]), FATES[3]))


def scan_measures_by_slice(cand, truths, validation, slice_mm, model):
    """One row per group and slice-thickness bin: the scans' F1, sensitivity and
    precision (visible-microbleed truth), false positives per scan and review
    candidates per scan, as ``dt.evaluate_system`` measures a cohort."""
    scans = pd.DataFrame(sorted(set(zip(cand["family"], cand["seed"]))),
                         columns=["family", "seed"])
    scans["group"] = [scan_group(f, s, validation) for f, s in zip(scans["family"],
                                                                   scans["seed"])]
    scans["slices"] = pd.cut([slice_mm[k] for k in zip(scans["family"], scans["seed"])],
                             SLICE_BINS_MM).astype(str)
    rows = []
    for (group, slices), part in scans.groupby(["group", "slices"], sort=True):
        keys = set(zip(part["family"], part["seed"]))
        mine = cand[[k in keys for k in zip(cand["family"], cand["seed"])]]
        m = dt.evaluate_system(mine, truths, model)["all"]
        rows.append({"group": group, "slices_mm": slices, "n_scans": m["n_scans"],
                     "n_cmbs": m["visible"]["n_cmbs"], "f1": m["visible"]["f1"],
                     "sensitivity": m["visible"]["sensitivity"],
                     "precision": m["visible"]["precision"],
                     "fp_per_scan": m["fp_per_scan"],
                     "review_per_scan": m["review_per_scan"]})
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", help="classifier file (default: the packaged one)")
    parser.add_argument("--csv", help="write the per-microbleed rows here")
    args = parser.parse_args(argv)
    model = dt.trees_only(load_model(args.model))
    cand, truths, validation = cached_cohorts(args.cache)
    slice_mm = slice_thickness(args.cache, set(zip(cand["family"], cand["seed"])))
    df = lesion_fates(cand, truths, validation, slice_mm, model)
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
    print("Scans by slice thickness (mm): F1, sensitivity, precision (visible microbleeds), "
          "false positives and review candidates per scan:")
    print(scan_measures_by_slice(cand, truths, validation, slice_mm, model)
          .round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
