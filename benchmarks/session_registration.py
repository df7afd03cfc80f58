"""How many iterations the rigid session registration needs at each resolution.

:func:`cmbprep.algorithms.registration.register_sessions` (the longitudinal graph's
``register_sessions`` node) runs ``antsRegistration`` Rigid on a 1.5 mm grid with three
levels (shrink 4, 2, 1; convergence window 10). At a threshold of 1e-6 (until
2026-12-02) the finest level rarely stops early, and its iterations cost the most; it
stops at 1e-5 now. This benchmark simulates participants scanned twice as
:mod:`cmbprep.testing.longitudinal` does (the second session with another head pose,
voxel size 1.2x1.2x1.8 mm, echo time, bias and noise), registers the second session's
first magnitude echo onto the first's (brain masks of the phantom) with each schedule
(:data:`SCHEDULES`: iterations per level and convergence threshold), and maps every
microbleed of the first session through the transform: the error is the distance to the
same microbleed in the second session (mm), where the simulator put it. Wall time per
registration on one ITK thread and seed 42, as in the pipeline (``--random-seed``'s
default; ANTs takes seed 0 as "no fixed seed").

Usage::

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 python benchmarks/session_registration.py \\
        --participants 6
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import nibabel as nib
import numpy as np

from cmbprep.algorithms.registration import map_points, sessions
from cmbprep.testing.longitudinal import DEFAULT_SESSIONS, _config
from cmbprep.testing.phantom import simulate_subject

#: (iterations per level, convergence threshold); the last is the shipped one.
SCHEDULES = (((500, 250, 100), 1e-6), ((500, 250, 25), 1e-6), ((500, 250, 0), 1e-6),
             ((500, 250, 100), 1e-5))


def _label(schedule):
    return f"{'x'.join(map(str, schedule[0]))} at {schedule[1]:g}"


def _session_images(ph):
    magnitude = nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine)
    mask = nib.Nifti1Image(ph.brain_mask.astype(np.uint8), ph.affine)
    return magnitude, mask


def _lesions(ph):
    cmbs = ph.truth[ph.truth["kind"] == "cmb"]
    return cmbs[["mni_x", "mni_y", "mni_z"]].to_numpy(), cmbs[["x", "y", "z"]].to_numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedules", type=int, nargs="+", default=None,
                        help="indices into SCHEDULES (default: all)")
    args = parser.parse_args(argv)
    schedules = [SCHEDULES[i] for i in args.schedules] if args.schedules else SCHEDULES
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.participants):
            anat_seed = args.seed * 1000 + 500 + p
            phs = []
            for i, session in enumerate(DEFAULT_SESSIONS):
                cfg = dataclasses.replace(_config(session, 8, {}),
                                          cmb_radius_mm=(0.9, 1.5))
                phs.append(simulate_subject(cfg, seed=anat_seed,
                                            acquisition_seed=anat_seed * 100 + i * 10 + 1))
            (mni1, xyz1), (mni2, xyz2) = _lesions(phs[0]), _lesions(phs[1])
            pairs = [(i, int(np.argmin(np.linalg.norm(mni2 - m, axis=1))))
                     for i, m in enumerate(mni1)]
            pairs = [(i, j) for i, j in pairs if np.linalg.norm(mni2[j] - mni1[i]) < 1e-6]
            images = (*_session_images(phs[0]), *_session_images(phs[1]))
            for schedule in schedules:
                t0 = time.perf_counter()
                result = sessions.register_sessions(
                    *images, f"{tmp}/p{p}_", seed=42, iterations=schedule[0],
                    convergence_threshold=schedule[1])
                wall = time.perf_counter() - t0
                mapped = map_points(xyz1[[i for i, _ in pairs]], result.forward)
                error = np.linalg.norm(mapped - xyz2[[j for _, j in pairs]], axis=1)
                rows.append((p, schedule, wall, error.mean(), error.max(),
                             result.residual_mm))
                print(f"participant {p}: {_label(schedule)}: {wall:5.1f} s, "
                      f"{len(pairs)} microbleeds, error mean {error.mean():.3f} max "
                      f"{error.max():.3f} mm, mask residual {result.residual_mm:.2f} mm",
                      flush=True)
    print("\nschedule              wall s (mean)  error mean / max of maxima (mm)")
    for schedule in schedules:
        sel = [r for r in rows if r[1] == schedule]
        print(f"{_label(schedule):21} {np.mean([r[2] for r in sel]):8.1f}"
              f"       {np.mean([r[3] for r in sel]):.3f} / {max(r[4] for r in sel):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
