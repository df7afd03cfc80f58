"""Accuracy and cost of the template registration's convergence threshold (run by hand).

:func:`cmbprep.algorithms.registration.register_template_to_subject` runs two passes of
``antsRegistration`` (rigid + affine, then masked affine + SyN) whose linear levels stop
when the metric's slope over 10 iterations falls under 1e-6. The session registration
stops at 1e-5 since 2026-12-02 (``benchmarks/session_registration.py``: half the time,
same error). This benchmark asks the same of the template registration: phantoms of the
``small`` protocol (1.5 mm, skull, the phantom's head mask as in the pipeline), registered
with each threshold; 3,000 random brain voxels and every simulated lesion mapped to the
template through the transform and compared with the phantom's own scanner-to-template
map (mm). Wall time of both passes on one ITK thread, seed 42.

Usage::

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 python benchmarks/template_registration.py \\
        --subjects 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import nibabel as nib
import numpy as np

from cmbprep.algorithms.registration import points_to_template, register_template_to_subject
from cmbprep.testing.phantom import PhantomConfig, simulate_subject

THRESHOLDS = (1e-6, 1e-5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    rows = []
    for s in range(args.subjects):
        ph = simulate_subject(PhantomConfig.from_protocol("small"), seed=args.seed + s)
        subject = nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine)
        head = nib.Nifti1Image(ph.head_mask.astype(np.uint8), ph.affine)
        rng = np.random.default_rng(s)
        ijk = np.argwhere(ph.brain_mask)
        ijk = ijk[rng.choice(len(ijk), size=min(3000, len(ijk)), replace=False)]
        brain = nib.affines.apply_affine(ph.affine, ijk)
        lesions = ph.truth[["x", "y", "z"]].to_numpy(float)
        for threshold in THRESHOLDS:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                result = register_template_to_subject(
                    subject, tmp, head_mask=head, seed=42,
                    convergence_threshold=threshold)
                wall = time.perf_counter() - t0
                xfm = result.template_to_subject_xfm  # maps subject points to template
                errors = [np.linalg.norm(points_to_template(p, xfm)
                                         - ph.scanner_to_template(p), axis=1)
                          for p in (brain, lesions)]
            rows.append((threshold, wall, *errors))
            print(f"subject {s}: {threshold:g}: {wall:5.1f} s "
                  f"(passes {result.qc['duration_s']}), brain error median "
                  f"{np.median(errors[0]):.2f} p95 {np.percentile(errors[0], 95):.2f} mm, "
                  f"lesions median {np.median(errors[1]):.2f} max {errors[1].max():.2f} mm",
                  flush=True)
    print("\nthreshold  wall s (mean)  brain error median / p95 (mm)  lesions median / max")
    for threshold in THRESHOLDS:
        sel = [r for r in rows if r[0] == threshold]
        brain = np.concatenate([r[2] for r in sel])
        lesions = np.concatenate([r[3] for r in sel])
        print(f"{threshold:<9g}  {np.mean([r[1] for r in sel]):8.1f}       "
              f"{np.median(brain):.2f} / {np.percentile(brain, 95):.2f}"
              f"                     {np.median(lesions):.2f} / {lesions.max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
