"""How the default detector's verdicts depend on the SWI mask power (``--swi-power``),
on validation scans with phase of the training families (run by hand).

    .venv/bin/python benchmarks/classifier_swi_power.py --cache /tmp/cmbprep-training

The classifier's ``phase`` part learned from SWIs of mask power 4 (the pipeline's
default). For each magnitude + phase validation scan of families A-C (from the training
cache of ``make train-classifier``; missing scans are simulated), the magnitude is
recovered from the cached power-4 SWI and its phase mask, the SWI is rebuilt with mask
power 2, 4 and 6, and the detector is run on each; the measures are pooled per power.
In family: these scans' families (not their seeds) were used to fit the model.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np

from cmbprep.algorithms.detection import detect_cmbprep
from cmbprep.algorithms.swi import phase_mask
from cmbprep.testing.detector_training import detector_parameters, prepare_scan, scan_list
from cmbprep.testing.scoring import summarise

POWERS = (2, 4, 6)
CACHED_POWER = 4  # prepare_scan's SWI (process_swi default)


def swi_with_power(swi, mask, power):
    """The SWI rebuilt with another mask power (the magnitude where the mask is > 0.05)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(mask > 0.05, swi / mask ** CACHED_POWER, swi)
    return (magnitude * mask ** power).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/cmbprep-training",
                        help="training cache (make train-classifier's TRAIN_CACHE)")
    parser.add_argument("--scans", type=int, default=12,
                        help="first N magnitude + phase validation scans of families A-C")
    args = parser.parse_args(argv)
    specs = [s for s in scan_list("validation")
             if s.family in "ABC" and s.input_kind == "gre"][: args.scans]
    per_power = {p: [] for p in POWERS}
    for spec in specs:
        arrays, truth, _ = prepare_scan(spec, args.cache)
        hand = arrays["handedness"] if arrays["handedness"] in ("left", "right") else "right"
        mask = phase_mask(arrays["phase"], hand)
        for power in POWERS:
            result = detect_cmbprep(swi_with_power(arrays["swi"], mask, power),
                                    arrays["brain"], arrays["affine"],
                                    filtered_phase=arrays["phase"],
                                    parameters=detector_parameters(arrays))
            cand = result.candidates
            per_power[power].append({"truth": truth, "protocol": spec.family,
                                     "detections": cand[cand["status"] == "cmb"]})
        print(f"{spec.family} {spec.seed} done", flush=True)
    print(f"{len(specs)} scans (families A-C, magnitude + phase, validation seeds)")
    for power, group in per_power.items():
        m = summarise(group)
        v = m["visible"]
        print(f"mask power {power}: F1 {v['f1']:.3f}, sensitivity {v['sensitivity']:.3f} "
              f"({v['true_positives']}/{v['n_cmbs']}), >= 3 mm {m['sensitivity_ge3mm']:.3f}, "
              f"{m['fp_per_scan']:.2f} FP/scan, calcifications "
              f"{m['calcifications_as_cmb']}/{m['calcifications']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
