"""Which training families and features the classifier's held-out figure depends on.

Fits the two-part classifier (:func:`cmbprep.testing.detector_training.fit_model`, the
shipped recipe) on subsets of the training families, with or without
``magnitude_contrast``, and scores every scan of the held-out family (direct mode, the
phantom's brain mask) and the validation scans it learned from. Reads the candidate
tables of a training cache (``python -m cmbprep.testing.detector_training --cache DIR
--collect-only``)::

    python benchmarks/classifier_ablation.py --cache /work/train/cache5
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from cmbprep.algorithms.detection.classifier import FEATURES
from cmbprep.testing import detector_training as dt

#: name -> (training families, uses magnitude_contrast)
VARIANTS = {
    "ABC_nomag": ("ABC", False),
    "ABC_mag": ("ABC", True),
    "ABCE_nomag": ("ABCE", False),
    "ABCE_mag": ("ABCE", True),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    data = {c: dt.collect(dt.scan_list(c), args.cache) for c in ("train", "validation")}
    (train_c, train_t), (val_c, val_t) = data["train"], data["validation"]
    all_c = pd.concat([train_c, val_c], ignore_index=True)
    held = all_c[all_c["family"] == dt.HELD_OUT_FAMILY]
    for name in args.variants:
        families, with_magnitude = VARIANTS[name]
        features = [f for f in FEATURES if with_magnitude or f != "magnitude_contrast"]
        seen = lambda c: c[c["family"].isin(list(families))]  # noqa: E731
        parts = dt.fit_model(seen(train_c), seen(val_c), val_t, features=features)
        model = {"phase": parts["phase"], "no_phase": parts["no_phase"]}
        out = {"validation": dt._compact(dt.evaluate_system(seen(val_c), val_t,
                                                            model)["all"]),
               "held_out": dt._compact(dt.evaluate_system(held, {**train_t, **val_t},
                                                          model)["all"]),
               "accept": {k: parts[k]["accept_score"] for k in parts}}
        print(name, json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
