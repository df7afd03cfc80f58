"""Benchmark: the group level on 1,000 participants' outputs (target: under 30 s).

Synthesises a cohort's participant output trees from a known Poisson model (the
imaging pipeline is not run; see ``tests/test_group_cohort.py``), then times
:func:`cmbprep.group.run_group` on it (reading every participant table,
prevalence, univariate/multivariate Poisson and negative-binomial models, the HTML
report). Python start-up and imports are timed separately.

Usage (from the repository root)::

    .venv/bin/python benchmarks/group_benchmark.py [--n-participants 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-participants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the cohort here and keep it")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    from cmbprep.group import run_group
    import statsmodels.formula.api  # noqa: F401 - imported lazily by run_group
    import matplotlib.pyplot  # noqa: F401
    t_import = time.perf_counter() - t0

    from tests.test_group_cohort import synthesise_cohort

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        n_patients = int(round(args.n_participants * 0.75))
        t0 = time.perf_counter()
        bids_dir, output_dir, truth = synthesise_cohort(
            root, n_patients=n_patients, n_controls=args.n_participants - n_patients,
            seed=args.seed, intercept=0.5)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            written = run_group(output_dir, bids_dir,
                                prevalence_by=["platelet_nadir:0,5,10,15"])
        t_group = time.perf_counter() - t0
        n_cmb = int(truth["true_count"].sum())
        print(f"participants: {args.n_participants} ({n_cmb} CMBs in their tables)")
        print(f"synthesising the output trees: {t_make:.1f} s (not part of the benchmark)")
        print(f"imports: {t_import:.1f} s")
        print(f"run_group: {t_group:.1f} s (target < 30 s)")
        print(f"report size: {Path(written['report']).stat().st_size / 1e6:.2f} MB")
    return 0 if t_group < 30 else 1


if __name__ == "__main__":
    sys.exit(main())
