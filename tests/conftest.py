"""Shared fixtures: small BIDS datasets written to disk, and the example dataset's
participant run, made once per test run and shared by the xdist workers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# One thread per ANTs call in tests: deterministic and fair to the parallel workers.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    """Write ``data`` as NIfTI (float32) with an affine (1.5 mm isotropic by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine
    nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine).to_filename(path)
    return path


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def make_tiny_gre_dataset(root: Path, subjects=("01",), sessions=(None,), runs=(None,),
                          acq=None, kind="gre", shape=(24, 24, 16), seed=0) -> Path:
    """A minimal valid BIDS dataset of GRE-type images (not anatomically meaningful).

    Used for tests of input discovery and exit codes that stop before processing.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0"})
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{s}\t50\n" for s in subjects))
    for sub in subjects:
        for ses in sessions:
            for run in runs:
                folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
                stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + \
                    (f"_acq-{acq}" if acq else "") + (f"_run-{run}" if run else "")
                mag = 100 + 10 * rng.standard_normal(shape)
                phase = rng.uniform(-np.pi, np.pi, shape)
                meta = {"EchoTime": 0.02, "MagneticFieldStrength": 3}
                if kind == "gre":
                    write_nifti(folder / f"{stem}_part-mag_T2starw.nii.gz", mag)
                    write_json(folder / f"{stem}_part-mag_T2starw.json", meta)
                    write_nifti(folder / f"{stem}_part-phase_T2starw.nii.gz", phase)
                    write_json(folder / f"{stem}_part-phase_T2starw.json",
                               {**meta, "Units": "rad"})
                elif kind == "megre":
                    for echo, te in ((1, 0.01), (2, 0.02), (3, 0.03)):
                        write_nifti(folder / f"{stem}_echo-{echo}_part-mag_MEGRE.nii.gz", mag)
                        write_json(folder / f"{stem}_echo-{echo}_part-mag_MEGRE.json",
                                   {**meta, "EchoTime": te})
                elif kind == "swi":
                    write_nifti(folder / f"{stem}_swi.nii.gz", mag)
                    write_json(folder / f"{stem}_swi.json", meta)
                    (root / ".bidsignore").write_text("*_swi.nii.gz\n*_swi.json\n")
                elif kind == "magnitude":
                    write_nifti(folder / f"{stem}_T2starw.nii.gz", mag)
                    write_json(folder / f"{stem}_T2starw.json", meta)
                elif kind == "t1w-only":
                    write_nifti(folder / f"{stem}_T1w.nii.gz", mag)
                    write_json(folder / f"{stem}_T1w.json", meta)
    return root


@pytest.fixture
def tiny_gre(tmp_path):
    return make_tiny_gre_dataset(tmp_path / "bids")


# --------------------------------------------------------------------------------------
# The example dataset through the participant level, once per test run
# --------------------------------------------------------------------------------------
def shared_root(tmp_path_factory) -> Path:
    """A folder shared by the xdist workers of this test run (or this run's basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def checksums(root: Path) -> dict:
    """SHA-256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def node_results(work: Path, sink_prefix: str = "ds_") -> dict:
    """mtime of every computing node's result file (sinks always rerun by design)."""
    return {p.relative_to(work).as_posix(): p.stat().st_mtime_ns
            for p in work.rglob("result_*.pklz") if not p.parent.name.startswith(sink_prefix)}


# Runs ``cmbprep ... participant`` recording every network look-up or connection (audit
# events) of this process and of the worker processes it forks, without blocking them.
# (The spawned processes of interfaces/itk_process.py start without the hook; they run
# one ANTs call.) Without NIPYPE_NO_ET, this would record Nipype's version check.
AUDITED_RUNNER = """
import json, os, sys
record = sys.argv[1]
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.connect"):
        with open(record, "a") as fobj:
            fobj.write(json.dumps([os.getpid(), event, repr(args)[:200]]) + "\\n")
sys.addaudithook(hook)
from cmbprep.cli.run import main
sys.exit(main(sys.argv[2:]))
"""


def _make_example_run(root: Path) -> dict:
    from cmbprep.cli.run import main
    from cmbprep.testing.phantom import write_example_dataset

    bids = write_example_dataset(root / "bids")
    before = checksums(bids)
    out, work, record = root / "derivatives", root / "work", root / "network.jsonl"
    args = [str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2",
            "--omp-nthreads", "1"]
    env = {k: v for k, v in os.environ.items() if k != "NIPYPE_NO_ET"}
    result = subprocess.run([sys.executable, "-c", AUDITED_RUNNER, str(record), *args],
                            capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    first = node_results(work)
    # Same work dir: everything cached. Also exercises --use-plugin and --write-graph.
    plugin = root / "plugin.yml"
    plugin.write_text("plugin: Linear\n")
    assert main(args + ["--use-plugin", str(plugin), "--write-graph"]) == 0
    second = node_results(work)
    assert main([str(bids), str(out), "group"]) == 0
    attempts = ([json.loads(line) for line in record.read_text().splitlines()]
                if record.exists() else [])
    return {"before": before, "first": first, "second": second,
            "network_attempts": attempts}


@pytest.fixture(scope="session")
def example_run(tmp_path_factory):
    """The example dataset of ``make demo`` (``write_example_dataset``, three subjects)
    through ``cmbprep ... participant`` (a real Nipype graph, real ANTsPy, in a child
    process that records network attempts), a cached rerun in this process and the group
    level: made once per test run, the first xdist worker to ask makes it, the others
    wait on a lock. Read-only for the tests: copy it before writing (``outputs_copy``).

    Returns a dict: ``bids``, ``out``, ``work`` (paths), ``before`` (input checksums),
    ``first`` / ``second`` (node result mtimes of the run and the rerun),
    ``network_attempts``.
    """
    root = shared_root(tmp_path_factory) / "example-run"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "run.json"
        if not done.exists():
            for name in ("bids", "derivatives", "work", "network.jsonl"):
                path = root / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else \
                    path.unlink(missing_ok=True)
            made = _make_example_run(root)
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(made))
            tmp.replace(done)
    return {"bids": root / "bids", "out": root / "derivatives", "work": root / "work",
            **json.loads(done.read_text())}
