"""How often would the detector use the phase with the right sign if its calibration read
the veins of the magnitude instead of (or beside) those of the SWI? (issue 11; a
measurement, nothing here is shipped)

For every scan with phase in a training cache, the detector's phase-sign calibration
(:func:`cmbprep.algorithms.detection.phase.paramagnetic_phase_sign` on the vessel-like
dark structures inside the brain: :func:`cmbprep.algorithms.detection.cmbprep_detector.
calibrate_phase` itself) is run on three sources of vessels:

``swi``
    the SWI's relative intensity (what the detector does: those veins were darkened by the
    phase mask made with the SWI stage's convention, so a wrong convention can confirm
    itself);
``magnitude``
    the bias-corrected magnitude's relative intensity (0.5 mm smoothing, as the
    detector's ``magnitude_contrast``), which does not depend on any convention;
``stronger``
    whichever of the two has the larger absolute correlation.

``calibrate_phase`` combines each with the SWI stage's convention (a disagreement is a
conflict: the phase is not used); the sign it would use is compared with the phantom's
true convention. Reads the cached volumes (``python -m cmbprep.testing.detector_training
--cache DIR --simulate-only``); about a minute for the 283 scans with phase on 2 cores::

    python benchmarks/phase_sign_calibration.py --cache /work/train/cache9
"""

from __future__ import annotations

import argparse
import collections
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from cmbprep.algorithms.arrays import bounding_box, voxel_sizes
from cmbprep.algorithms.detection import CMBPREP_PARAMETERS, PHASE_SIGN_OF_HANDEDNESS
from cmbprep.algorithms.detection.candidates import relative_intensity
from cmbprep.algorithms.detection.cmbprep_detector import (
    calibrate_phase,
    magnitude_relative_intensity,
)
from cmbprep.testing import detector_training as dt

SOURCES = ("swi", "magnitude", "stronger")


def outcome(info, truth):
    """What the detector does with :func:`calibrate_phase`'s ``info``: ``conflict`` (the
    phase is not used), ``none`` (no sign), ``right`` or ``wrong`` (used with that sign)."""
    if info["phase_sign_conflict"]:
        return "conflict"
    if not info["phase_used"]:
        return "none"
    return "right" if info["phase_sign"] == truth else "wrong"


def calibrate_scan(args):
    """Calibration results of one cached scan (None without phase)."""
    cache, spec = args
    with np.load(Path(cache) / f"{spec.family}_{spec.seed}.npz") as d:
        if "phase" not in d.files:
            return None
        arrays = {k: d[k] for k in ("swi", "magnitude", "phase", "brain", "affine",
                                    "handedness")}
    reference = PHASE_SIGN_OF_HANDEDNESS.get(str(arrays["handedness"]))
    p = dict(CMBPREP_PARAMETERS, phase_sign_reference=reference)
    affine = arrays["affine"]
    voxel_size = tuple(float(v) for v in voxel_sizes(affine))
    brain = arrays["brain"].astype(bool)
    box = bounding_box(brain, margin_vox=[int(np.ceil(4.0 / v)) for v in voxel_size])
    brain_c = brain[box]
    relative = {
        "swi": relative_intensity(arrays["swi"][box].astype(np.float32), brain_c,
                                  background_mm=p["background_sigma_mm"],
                                  voxel_size=voxel_size),
        "magnitude": magnitude_relative_intensity(arrays["magnitude"][box].astype(np.float32),
                                                  brain_c, voxel_size, p)}
    # the detector's own decision, fed with the vessels of each image
    info = {name: calibrate_phase(arrays["phase"], arrays["swi"].shape, box, rel, brain_c,
                                  voxel_size, affine, p)[1]
            for name, rel in relative.items()}
    strength = {k: abs(v["phase_sign_calibration_correlation"]) for k, v in info.items()}
    strength = {k: (v if np.isfinite(v) else 0.0) for k, v in strength.items()}
    info["stronger"] = info["swi" if strength["swi"] >= strength["magnitude"] else "magnitude"]
    truth = int(spec.config.phase_sign)
    return {"scan": f"{spec.family}_{spec.seed}", "input_kind": spec.input_kind,
            "swi_stage_right": reference == truth,
            **{f"{k}_correlation": float(info[k]["phase_sign_calibration_correlation"])
               for k in SOURCES},
            **{k: outcome(info[k], truth) for k in SOURCES}}


def map_phase_scans(job, cache, jobs):
    """``job((cache, spec))`` for every training and validation scan with phase (the
    scanner-SWI scans are skipped), in ``jobs`` processes; the non-None results."""
    specs = [s for c in ("train", "validation") for s in dt.scan_list(c)
             if s.input_kind != "swi"]
    with Pool(jobs) as pool:
        return [r for r in pool.map(job, [(cache, s) for s in specs], chunksize=4) if r]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="write the per-scan table here")
    args = parser.parse_args(argv)
    rows = map_phase_scans(calibrate_scan, args.cache, args.jobs)
    print(f"{len(rows)} scans with phase; the SWI stage's convention is right on "
          f"{sum(r['swi_stage_right'] for r in rows)}")
    for name in SOURCES:
        counts = collections.Counter(r[name] for r in rows)
        print(f"vessels of the {name}: " + ", ".join(
            f"{k} {counts.get(k, 0)}" for k in ("right", "conflict", "wrong", "none")))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
