"""Time and peak memory of simulating one phantom subject per protocol.

Run by hand (not part of the test suite)::

    python benchmarks/phantom_benchmark.py small megre iso1 clinical itp

Each protocol runs in a fresh subprocess so that the peak resident memory (ru_maxrss) is
that protocol's alone. The template loading (first call in a process) is timed
separately. Wall and CPU (user + system) seconds are both reported, with the 1-minute load
average at the end, because shared machines inflate wall time. Single-threaded
(``OMP_NUM_THREADS=1``; the FFTs use one worker).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), cpu()
from cmbprep.testing import phantom
from cmbprep.testing.phantom.anatomy import template_maps
template_maps()
t1, c1 = time.perf_counter(), cpu()
cfg = phantom.PhantomConfig.from_protocol(sys.argv[1])
sub = phantom.simulate_subject(cfg, seed=0)
t2, c2 = time.perf_counter(), cpu()
print(json.dumps({
    "protocol": sys.argv[1],
    "shape": list(sub.magnitude.shape),
    "voxel_size_mm": [round(v, 3) for v in sub.voxel_size],
    "n_lesions": int(len(sub.truth)),
    "template_load_wall_s": round(t1 - t0, 2),
    "template_load_cpu_s": round(c1 - c0, 2),
    "simulate_wall_s": round(t2 - t1, 2),
    "simulate_cpu_s": round(c2 - c1, 2),
    "load_average_1min": round(os.getloadavg()[0], 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def main(protocols):
    for name in protocols or ["small"]:
        out = subprocess.run([sys.executable, "-c", CHILD, name], capture_output=True,
                             text=True, check=True)
        print(json.dumps(json.loads(out.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main(sys.argv[1:])
