"""How often is the phase convention right before brain extraction (SWI chain, step 2)
and after it, inside the brain (step 5, :func:`cmbprep.algorithms.swi.
confirm_handedness_in_brain`)? (issue 11; the measurement behind step 5)

For every cached scan with phase of a training cache (``python -m
cmbprep.testing.detector_training --cache DIR --simulate-only``; the cache keeps step 2's
convention, the filtered phase, the bias-corrected magnitude and the phantom's brain
mask), step 5 is run on the phantom's brain mask with step 2's convention as the first
pass, and both are compared with the phantom's true convention. Reads the volumes only
(no simulation, no detection); about 4 minutes for 283 scans on 2 cores::

    python benchmarks/phase_convention_in_brain.py --cache /work/train/cache [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
from phase_sign_calibration import map_phase_scans

from cmbprep.algorithms.detection import PHASE_SIGN_OF_HANDEDNESS
from cmbprep.algorithms.swi import confirm_handedness_in_brain
from cmbprep.testing import detector_training as dt

HANDEDNESS_OF_SIGN = {v: k for k, v in PHASE_SIGN_OF_HANDEDNESS.items()}


def check_scan(args):
    """Step 2's and step 5's conventions of one cached scan against the truth (None
    without phase)."""
    cache, spec = args
    with np.load(Path(cache) / f"{dt._tag(spec)}.npz") as d:
        if "phase" not in d.files:
            return None
        arrays = {k: d[k] for k in ("magnitude", "phase", "brain", "affine", "handedness")}
    first = str(arrays["handedness"])
    truth = HANDEDNESS_OF_SIGN[int(spec.config.phase_sign)]
    used, meta = confirm_handedness_in_brain(arrays["magnitude"], arrays["phase"],
                                             arrays["affine"], arrays["brain"], first)
    return {"scan": dt._tag(spec), "family": spec.family, "input_kind": spec.input_kind,
            "truth": truth, "step2": first, "step5": used, "score": meta["Score"],
            "dark_voxels": meta["DarkVoxels"], "decided": meta["Handedness"] != "n/a"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="write the per-scan table here")
    args = parser.parse_args(argv)
    rows = map_phase_scans(check_scan, args.cache, args.jobs)
    print(f"{len(rows)} scans with phase; step 5 decided on "
          f"{sum(r['decided'] for r in rows)}")
    for step in ("step2", "step5"):
        wrong = [r["scan"] for r in rows if r[step] != r["truth"]]
        by_family = collections.Counter(r["family"] for r in rows if r[step] == r["truth"])
        total = collections.Counter(r["family"] for r in rows)
        print(f"{step}: right on {len(rows) - len(wrong)} of {len(rows)} ("
              + ", ".join(f"{f} {by_family[f]}/{total[f]}" for f in sorted(total))
              + f"); wrong: {', '.join(wrong) or 'none'}")
    scores = np.array([abs(r["score"]) for r in rows])
    print(f"|score| of step 5: median {np.median(scores):.3f}, smallest {scores.min():.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
