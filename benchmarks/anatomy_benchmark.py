"""Benchmark: brain extraction + template registration + region labels (run by hand).

Simulates one phantom (default: the ``itp`` protocol, 0.5 x 0.5 x 1 mm whole head) once,
caches its magnitude/head mask/brain mask as NIfTI, then runs the anatomy in a fresh
child process and reports wall time per step and the child's peak resident memory.

Usage::

    python benchmarks/anatomy_benchmark.py \\
        --protocol itp --nthreads 2 --reg-threads 1 --resolution-mm 2 --cache /tmp/anat_bench

The registration runs on ``--reg-threads`` ITK threads (default 1, as in the pipeline,
where the registration node is pinned to one thread for reproducibility). ITK reads its
thread count once per process, so in this single child process the ANTs resampling of
the later steps runs on that many threads too (numpy/scipy work is single-threaded);
``--nthreads`` is recorded for reference.

Targets (issue #4): under 60 s and under 4 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_inputs(cache: Path, protocol: str, seed: int) -> Path:
    import nibabel as nib
    import numpy as np

    from cmbprep.testing.phantom import PhantomConfig, simulate_subject

    folder = cache / f"{protocol}_seed{seed}"
    if (folder / "magnitude.nii.gz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ph = simulate_subject(
        PhantomConfig.from_protocol(protocol, deformation_mm=3.0, n_cmbs=10, n_veins=10),
        seed=seed,
    )
    nib.save(nib.Nifti1Image(ph.magnitude[..., 0].astype(np.float32), ph.affine),
             folder / "magnitude.nii.gz")
    nib.save(nib.Nifti1Image(ph.head_mask.astype(np.uint8), ph.affine),
             folder / "head_mask.nii.gz")
    nib.save(nib.Nifti1Image(ph.brain_mask.astype(np.uint8), ph.affine),
             folder / "brain_truth.nii.gz")
    print(f"phantom {protocol} {ph.magnitude.shape[:3]} simulated in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def run_anatomy(
    folder: Path, resolution_mm: float, nthreads: int, seed: int, reg_threads: int = 1
) -> dict:
    from cmbprep.algorithms import registration as reg

    reg.set_ants_threads(reg_threads)
    import nibabel as nib
    import numpy as np

    from cmbprep.algorithms import lobes
    from cmbprep.algorithms.arrays import voxel_sizes
    from cmbprep.algorithms.brain import dice, extract_brain

    timings = {}
    t0 = time.perf_counter()
    mag = nib.load(folder / "magnitude.nii.gz")
    head = nib.load(folder / "head_mask.nii.gz")
    mag = nib.Nifti1Image(np.asarray(mag.dataobj, np.float32), mag.affine)
    timings["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    res = reg.register_template_to_subject(
        mag, folder / "work", head_mask=head, resolution_mm=resolution_mm, seed=seed,
        n_threads=reg_threads,
    )
    timings["registration"] = time.perf_counter() - t
    t = time.perf_counter()
    mask, _ = extract_brain(mag, res.template_to_subject_xfm, head_mask=head)
    timings["brain_extraction"] = time.perf_counter() - t
    t = time.perf_counter()
    atlas, lut = lobes.load_atlas()
    _dseg, _coverage, _not_covered = lobes.label_subject(
        mask, atlas, lut, res.template_to_subject_xfm, res.subject_to_template_xfm
    )
    timings["labels_and_coverage"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    truth = np.asarray(nib.load(folder / "brain_truth.nii.gz").dataobj) > 0
    return {
        "shape": list(mag.shape),
        "voxel_size_mm": [round(float(v), 3) for v in voxel_sizes(mag.affine)],
        "resolution_mm": resolution_mm,
        "nthreads": nthreads,
        "registration_threads": reg_threads,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "registration_qc": {k: res.qc[k] for k in ("nmi", "mask_in_head", "affine_scale",
                                                  "registration_ok", "duration_s")},
        "brain_dice": round(dice(np.asarray(mask.dataobj) > 0, truth), 4),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="itp")
    parser.add_argument("--seed", type=int, default=42,
                        help="ANTs seed (0 means no fixed seed: not reproducible)")
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--reg-threads", type=int, default=1)
    parser.add_argument("--resolution-mm", type=float, default=2.0)
    parser.add_argument("--cache", default="/tmp/cmbprep_anat_bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.child:
        result = run_anatomy(
            Path(ns.child), ns.resolution_mm, ns.nthreads, ns.seed, ns.reg_threads
        )
        print(json.dumps(result))
        return 0
    folder = make_inputs(Path(ns.cache), ns.protocol, ns.seed)
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(ns.reg_threads))
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), "--nthreads", str(ns.nthreads),
         "--reg-threads", str(ns.reg_threads), "--resolution-mm", str(ns.resolution_mm),
         "--seed", str(ns.seed)],
        env=env, capture_output=True, text=True, check=True,
    )
    wall = time.perf_counter() - t0
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    result.update(
        protocol=ns.protocol,
        child_wall_s=round(wall, 1),
        peak_rss_gb=round(peak_gb, 2),
        load_avg_1_5_15_before=load_before,
        load_avg_1_5_15_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
