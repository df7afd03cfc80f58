"""Time and peak memory of the SWI chain (SWI + N4 + sliding-slab mIP) on a whole-head
0.5 x 0.5 x 1 mm volume (360 x 440 x 150 voxels). Run by hand, not by pytest::

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 python benchmarks/swi_benchmark.py \\
        --input-kind gre --threads 2

The input is synthetic (building the physics phantom at this resolution costs far more
than the step being measured): an ellipsoidal head with a brighter brain, Rician-like
noise, a smooth receive bias, dark tubular "veins" and small dark spheres, and a phase
made of a smooth wrapped background field plus local phase around the dark structures.
The data are written to NIfTI first; the measured step runs in a fresh child process
that loads the files and runs :func:`~cmbprep.algorithms.swi.process_swi` (the steps of
the SWI workflow one after the other, N4 included, in that one process), so
``ru_maxrss`` of the child is the peak resident memory of the chain (inputs included,
data generation excluded). In the workflow N4 and the phase processing are separate
nodes that Nipype runs in parallel; this benchmark does not overlap them.
Targets: under 20 s and under 3 GB on 2 cores. ``total_s`` is loading + SWI + mIP;
``child_wall_s`` also counts the child's start-up and imports. Wall times depend on
other load on the machine; the child's CPU time (user + sys, including the Python/ANTs
imports) and the 1-minute load average are printed too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def make_volume(shape, voxel_size, n_echoes, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - n / 2) * v for n, v in zip(shape, voxel_size)],
                        indexing="ij", sparse=True)
    x, y, z = grids
    head = (x / 85) ** 2 + (y / 105) ** 2 + (z / 70) ** 2 < 1
    brain = (x / 70) ** 2 + (y / 90) ** 2 + (z / 58) ** 2 < 1
    signal = np.where(brain, 1.0, np.where(head, 0.6, 0.0)).astype(np.float32)
    bias = (1 + 0.2 * np.cos(x / 60) * np.cos(y / 80 + 0.3)).astype(np.float32)
    # veins (straight tubes, random directions) and microbleeds drawn as points, then
    # blurred once: sigma 0.6 mm (veins ~1.4 mm across), spheres enlarged by dilation
    seeds = np.zeros(shape, np.float32)
    centre = np.asarray(shape) / 2
    vs = np.asarray(voxel_size)
    for _ in range(80):
        p = rng.uniform(-50, 50, 3)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pts = p + np.arange(-25, 25, 0.25)[:, None] * d
        idx = np.round(pts / vs + centre).astype(int)
        keep = np.all((idx >= 0) & (idx < shape), axis=1)
        seeds[tuple(idx[keep].T)] = 1
    from scipy import ndimage
    blobs = np.zeros(shape, bool)
    for _ in range(20):
        idx = np.round(rng.uniform(-45, 45, 3) / vs + centre).astype(int)
        blobs[tuple(idx)] = True
    blobs = ndimage.binary_dilation(blobs, np.ones((5, 5, 3), bool))
    seeds[blobs] = 1
    local = ndimage.gaussian_filter(seeds, 0.6 / vs) * np.float32(3)
    del seeds, blobs
    np.clip(local, 0, 1, out=local)
    local *= brain
    background = (0.05 * x + 0.03 * y + 0.0004 * z ** 2).astype(np.float32)
    mags, phases = [], []
    for echo in range(n_echoes):
        te_scale = (echo + 1) / n_echoes
        mag = signal * bias * (1 - 0.7 * local) * np.float32(np.exp(-0.5 * te_scale))
        phase = (background - 1.5 * local) * np.float32(te_scale * 4)
        noise = rng.normal(0, 0.02, (2,) + shape).astype(np.float32)
        re = mag * np.cos(phase) + noise[0]
        im = mag * np.sin(phase) + noise[1]
        mags.append(np.sqrt(re ** 2 + im ** 2))
        phases.append(np.arctan2(im, re))
    return np.stack(mags, -1), np.stack(phases, -1)


def _child(paths, kwargs, queue):
    from cmbprep.algorithms.mip import sliding_minip
    from cmbprep.algorithms.swi import load_echoes, process_swi

    t0 = time.perf_counter()
    mag, affine, _ = load_echoes(paths["magnitude"])
    phase = load_echoes(paths["phase"])[0] if paths["phase"] else None
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = process_swi(mag, phase, affine, **kwargs)
    t_swi = time.perf_counter() - t0
    t0 = time.perf_counter()
    sliding_minip(out["swi"], affine, 8.0)
    t_minip = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_kb = usage.ru_maxrss
    queue.put({"load_s": round(t_load, 2), "swi_s": round(t_swi, 2),
               "minip_s": round(t_minip, 2), "total_s": round(t_load + t_swi + t_minip, 2),
               "peak_rss_gb": round(peak_kb / 1024 ** 2, 2),
               "cpu_user_plus_sys_s": round(usage.ru_utime + usage.ru_stime, 1),
               "load_average_1min": round(os.getloadavg()[0], 1),
               "handedness": out["meta"]["Handedness"]})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-kind", choices=("gre", "megre", "swi"), default="gre")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(360, 440, 150))
    parser.add_argument("--voxel-size", type=float, nargs=3, default=(0.5, 0.5, 1.0))
    parser.add_argument("--echoes", type=int, default=4, help="echoes for megre")
    parser.add_argument("--no-n4", action="store_true")
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    n_echoes = args.echoes if args.input_kind == "megre" else 1
    mag, phase = make_volume(tuple(args.shape), tuple(args.voxel_size), n_echoes)
    affine = np.diag(list(args.voxel_size) + [1.0])
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"magnitude": [], "phase": []}
        for e in range(n_echoes):
            paths["magnitude"].append(str(Path(tmp) / f"mag{e}.nii"))
            nib.Nifti1Image(mag[..., e], affine).to_filename(paths["magnitude"][-1])
            if args.input_kind != "swi":
                paths["phase"].append(str(Path(tmp) / f"phase{e}.nii"))
                nib.Nifti1Image(phase[..., e], affine).to_filename(paths["phase"][-1])
        del mag, phase
        kwargs = dict(input_kind=args.input_kind,
                      echo_times=[0.005 * (e + 1) for e in range(n_echoes)],
                      phase_units="rad", handedness="auto", bias_correct=not args.no_n4,
                      n_threads=args.threads)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(paths, kwargs, queue))
        t_start = time.perf_counter()
        proc.start()
        result = queue.get()
        # child start to result: interpreter start-up, imports, loading, SWI, mIP
        result["child_wall_s"] = round(time.perf_counter() - t_start, 2)
        proc.join()
    result.update({"input_kind": args.input_kind, "shape": list(args.shape),
                   "voxel_size_mm": list(args.voxel_size), "echoes": n_echoes,
                   "threads": args.threads, "n4": not args.no_n4,
                   "cpu_count": os.cpu_count(), "python": sys.version.split()[0]})
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
