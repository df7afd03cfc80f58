"""Is the held-out figure limited by how many training scans there are? (issue 11; a
measurement, nothing here is shipped)

The shipped recipe (:func:`cmbprep.testing.detector_training.fit_model`: trees, Platt map,
accept thresholds) fitted on subsets of the training scans of the families the shipped
model learned from (``--sizes``: scans per family; a size below the full 32 is fitted on
every disjoint subset of that size, taken every ``32 / size``-th seed, up to
``--repeats`` of them), calibrated and thresholded on all validation scans of those
families, and measured on all scans of the held-out family and of each test family
(never seen by any fit). If the figures still rise from half the scans to all of them,
more simulated scans are worth making; if they do not, the number of scans is not what
limits them.

Reads the candidate tables of a training cache (``python -m
cmbprep.testing.detector_training --cache DIR --collect-only``); about 3 minutes per fit
on one core::

    python benchmarks/learning_curve.py --cache /work/train/cache --sizes 8 16 32 \
        --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cmbprep.testing import detector_training as dt


def subsets(seeds, size, repeats):
    """Disjoint subsets of ``size`` of the sorted ``seeds``: every ``len / size``-th seed,
    starting at 0, 1, ... (at most ``repeats``)."""
    seeds = sorted(seeds)
    step = len(seeds) // size
    return [seeds[start::step][:size] for start in range(min(step, repeats))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)
    unseen = (dt.HELD_OUT_FAMILY, *dt.TEST_FAMILIES)
    train = dt.collect(dt.scan_list("train"), args.cache)
    validation = dt.collect(dt.scan_list("validation"), args.cache)
    (train_c, _), (val_c, val_t) = train, validation
    all_c, all_t = dt._pooled(train, validation)
    families = dt.model_families(train_c["family"].unique(), dt.HELD_OUT_FAMILY)
    seeds = {f: train_c.loc[train_c["family"] == f, "seed"].unique() for f in families}
    learn_val = val_c[val_c["family"].isin(families)]
    rows = []
    for size in args.sizes:
        for n, _ in enumerate(subsets(seeds[families[0]], size, args.repeats)):
            keep = {(f, s) for f in families for s in subsets(seeds[f], size, args.repeats)[n]}
            sel = [(f, s) in keep for f, s in zip(train_c["family"], train_c["seed"])]
            t0 = time.perf_counter()
            parts = dt.fit_model(train_c[sel], learn_val, val_t)
            model = {"phase": parts["phase"], "no_phase": parts["no_phase"]}
            row = {"size": size, "subset": n, "fit_s": round(time.perf_counter() - t0)}
            for family in unseen:
                m = dt._compact(dt.evaluate_system(all_c[all_c["family"] == family], all_t,
                                                   model)["all"])
                row[family] = m
            row["mean_f1"] = float(np.mean([row[f]["f1"] for f in unseen]))
            rows.append(row)
            print(f"{size} scans per family, subset {n} ({row['fit_s']} s): "
                  + "; ".join(f"{f} F1 {row[f]['f1']:.3f} (sensitivity "
                              f"{row[f]['sensitivity']:.3f}, FP/scan "
                              f"{row[f]['fp_per_scan']:.2f})" for f in unseen)
                  + f"; mean {row['mean_f1']:.3f}", flush=True)
    for size in args.sizes:
        mine = [r["mean_f1"] for r in rows if r["size"] == size]
        print(f"{size} scans per family: mean F1 over {', '.join(unseen)} "
              f"{np.mean(mine):.3f} ({len(mine)} subsets)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
