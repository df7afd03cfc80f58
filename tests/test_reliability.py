"""Reliability: a run cannot hang, leaves no orphans, writes output sets as units and
never changes method silently (issue 14).

Real processes, real signals, real files: the fast cases run small Nipype graphs with
the plugin cmbprep uses and the real ``cmbprep`` command on a tiny dataset; the slow ones
(``-m slow``) run the participant level on the phantom.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from cmbprep.cli import run as cli_run
from cmbprep.cli.execution import CmbprepMultiProcPlugin, Progress
from cmbprep.errors import NoSpaceError, WorkerLostError
from cmbprep.utils.derivatives import check_unit_manifest, commit_unit, manifest_path

from .conftest import make_tiny_gre_dataset, write_json, write_nifti

CMBPREP = [sys.executable, "-m", "cmbprep.cli.run"]


# -- small graphs under the plugin ----------------------------------------------------------

def _kill_myself(x):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return x


def _sleep_and_report(x):
    import os
    import time

    # written whole or not at all: the run may stop this worker between open and write
    with open(x + ".part", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(x + ".part", x)
    time.sleep(120)
    return x


def _unpicklable(x):
    return lambda: x  # the worker cannot send this back: the future itself fails


def _fill_disk(x):
    with open("big.bin", "wb") as handle:
        handle.write(b"\0" * (4 << 20))
    return x


def _raise_enospc(x):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "big.bin")


def _graph(tmp_path, *functions, name="wf"):
    workflow = pe.Workflow(name=name, base_dir=str(tmp_path / "work"))
    for index, function in enumerate(functions):
        node = pe.Node(niu.Function(input_names=["x"], output_names=["x"],
                                    function=function), name=f"n{index}")
        node.inputs.x = str(tmp_path / f"pid{index}.txt")
        workflow.add_nodes([node])
    workflow.config["execution"].update({"crashdump_dir": str(tmp_path / "crash"),
                                         "crashfile_format": "txt",
                                         "poll_sleep_duration": 0.5})
    return workflow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_dead_worker_ends_the_run_within_seconds(tmp_path):
    """A SIGKILLed worker (what the OOM killer does) used to hang the run for ever."""
    workflow = _graph(tmp_path, _kill_myself, _sleep_and_report)
    plugin = CmbprepMultiProcPlugin({"n_procs": 2})
    start = time.monotonic()
    with pytest.raises(WorkerLostError, match="killed by SIGKILL.*lower --nprocs"):
        workflow.run(plugin=plugin)
    assert time.monotonic() - start < 30
    sleeper = tmp_path / "pid1.txt"
    if sleeper.exists():  # the other worker was running: it is stopped too
        pid = int(sleeper.read_text())
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)


def test_failing_future_is_a_failed_node_not_a_hang(tmp_path):
    workflow = _graph(tmp_path, _unpicklable)
    start = time.monotonic()
    with pytest.raises(RuntimeError):
        workflow.run(plugin=CmbprepMultiProcPlugin({"n_procs": 2}))
    assert time.monotonic() - start < 30
    assert list((tmp_path / "crash").glob("crash-*.txt"))


def _tiny_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                             str(path)], capture_output=True)
    return result.returncode == 0


def test_full_work_disk_stops_the_run(tmp_path):
    """A real full disk (a 1 MB tmpfs when root), else a node raising ENOSPC."""
    disk = tmp_path / "disk"
    mounted = _tiny_tmpfs(disk, "1m")
    try:
        workflow = _graph(disk if mounted else tmp_path,
                          _fill_disk if mounted else _raise_enospc, _sleep_and_report)
        start = time.monotonic()
        with pytest.raises((NoSpaceError, OSError)) as info:
            workflow.run(plugin=CmbprepMultiProcPlugin({"n_procs": 2}))
        assert time.monotonic() - start < 30
        assert isinstance(info.value, NoSpaceError) or info.value.errno == errno.ENOSPC
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def test_progress_prints_one_line_per_stage(capsys):
    class Node:
        def __init__(self, fullname):
            self.fullname = fullname

    base = "cmbprep_wf.single_subject_05_wf"
    names = [f"{base}.conform", f"{base}.detection_wf.detect", f"{base}.detection_wf.x"]
    times = iter([0.0, 1.0, 2.0, 43.0, 44.0])
    progress = Progress(names, {"sub-05": "sub-05"}, clock=lambda: next(times))
    progress(Node(names[0]), "end")
    progress(Node(names[1]), "start")
    progress(Node(names[1]), "end")
    progress(Node(names[2]), "end")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[1/2] sub-05 inputs done (0 s; 1 s since start)",
                     "[2/2] sub-05 detection done (42 s; 44 s since start)"]
    assert progress.completed_units() == {"sub-05"}


# -- the command line: signals, locks, early checks -----------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start(tiny, out, work, *extra):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([*CMBPREP, str(tiny), str(out), "participant", "-w", str(work),
                             "--nprocs", "2", "--omp-nthreads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _wait_for_workers(proc, n=1, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        children = [c for c in _children(proc.pid) if _alive(c)]
        if len(children) >= n:
            time.sleep(1.0)
            return [c for c in _children(proc.pid) if _alive(c)]
        time.sleep(0.2)
    raise AssertionError("no worker process started")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_every_worker(tmp_path, signum, code):
    tiny = make_tiny_gre_dataset(tmp_path / "bids", subjects=("01", "02"))
    proc = _start(tiny, tmp_path / "out", tmp_path / "work")
    workers = _wait_for_workers(proc, n=2)
    start = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert time.monotonic() - start < 15
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert err.strip().splitlines()[-1].startswith("cmbprep: error:")
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]
    # nothing half-written: no temporary file in the output dataset
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_killed_worker_of_a_real_run_exits_71(tmp_path):
    tiny = make_tiny_gre_dataset(tmp_path / "bids", subjects=("01", "02"))
    proc = _start(tiny, tmp_path / "out", tmp_path / "work")
    workers = _wait_for_workers(proc, n=2)
    start = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 71, err
    assert time.monotonic() - start < 15
    assert "killed by SIGKILL" in err and "--nprocs" in err
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]


def test_second_run_for_the_same_participant_refuses(tmp_path):
    from cmbprep.utils.io import participant_locks

    tiny = make_tiny_gre_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    with participant_locks(out, ["01"]):
        result = subprocess.run([*CMBPREP, str(tiny), str(out), "participant", "-w",
                                 str(tmp_path / "work")], capture_output=True, text=True)
        assert result.returncode == 75, result.stderr
        assert "sub-01: another cmbprep run" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr
    assert not (out / ".cmbprep").exists()  # locks removed with the run
    with participant_locks(out, ["01"]):  # free again
        pass


def test_read_only_output_fails_before_inputs_are_read(tmp_path, capsys, monkeypatch):
    tiny = make_tiny_gre_dataset(tmp_path / "bids")
    parent = tmp_path / "ro"
    parent.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(parent)],
        capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root cannot simulate a read-only folder without mount")
        parent.chmod(0o555)

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("inputs were read before the output folder was checked")

    monkeypatch.setattr(cli_run, "preflight", must_not_run)
    try:
        code = cli_run.main([str(tiny), str(parent / "out"), "participant", "-w",
                             str(tmp_path / "work")])
        err = capsys.readouterr().err
        assert code == 73 and str(parent / "out") in err
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(parent)], check=False)


def test_five_d_image_is_rejected_early(tmp_path, capsys):
    tiny = make_tiny_gre_dataset(tmp_path / "bids")
    mag = tiny / "sub-01" / "anat" / "sub-01_part-mag_T2starw.nii.gz"
    write_nifti(mag, np.ones((24, 24, 16, 1, 2)))
    code = cli_run.main([str(tiny), str(tmp_path / "out"), "participant", "-w",
                         str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 65 and "sub-01_part-mag_T2starw.nii.gz" in err and "dimensions" in err
    assert err.count("\n") == 1


def test_empty_anat_folder_is_missing_input_not_selection(tmp_path, capsys):
    tiny = make_tiny_gre_dataset(tmp_path / "bids")
    for path in (tiny / "sub-01" / "anat").iterdir():
        path.unlink()
    code = cli_run.main([str(tiny), str(tmp_path / "out"), "participant",
                         "--skip-bids-validation", "-w", str(tmp_path / "work")])
    assert code == 66 and "sub-01" in capsys.readouterr().err


def test_participant_without_swi_does_not_stop_the_others(tmp_path):
    from cmbprep.utils import bids as bids_utils

    tiny = make_tiny_gre_dataset(tmp_path / "bids", subjects=("01", "02"))
    for path in (tiny / "sub-02" / "anat").iterdir():
        path.rename(path.with_name(path.name.replace("part-mag_T2starw", "T1w")
                                   .replace("part-phase_T2starw", "acq-x_T1w")))
    from cmbprep.cli.parser import parse_args

    settings = parse_args([str(tiny), str(tmp_path / "out"), "participant"])
    layout = bids_utils.load_layout(tiny)
    failures = []
    units = cli_run.collect_units(settings, layout, bids_utils.load_filters(None),
                                  ["01", "02"], failures)
    assert [u.name for u in units] == ["sub-01"]
    assert failures[0][0] == "sub-02" and "no usable SWI" in str(failures[0][1])


def test_filter_dropping_the_phase_is_an_error(tmp_path, capsys):
    tiny = make_tiny_gre_dataset(tmp_path / "bids", sessions=("1", "2"))
    # the docs' own example filter matches no file of this dataset: only the
    # 'magnitude' query still finds the magnitudes, which would run magnitude-only
    filters = write_json(tmp_path / "filter.json",
                         {"mag": {"acquisition": "highres"},
                          "phase": {"acquisition": "highres"}})
    code = cli_run.main([str(tiny), str(tmp_path / "out"), "participant", "-w",
                         str(tmp_path / "work"), "--bids-filter-file", str(filters)])
    err = capsys.readouterr().err
    assert code == 18 and "but not the phase" in err and "magnitude-only" in err


def test_home_not_needed(tmp_path):
    """HOME unreadable, as under Apptainer with a foreign uid (a real one when root)."""
    import shutil
    import tempfile

    foreign = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="cmbprep-test-home-")) if foreign else tmp_path
    try:
        os.chmod(base, 0o777)
        home = base / "home"
        home.mkdir(mode=0)
        env = dict(os.environ, HOME=str(home))
        env.pop("MPLCONFIGDIR", None)
        tiny = make_tiny_gre_dataset(base / "bids")
        os.chmod(base / "bids", 0o755)
        before = set(Path("/tmp").glob("matplotlib-*")) | set(
            Path("/tmp").glob("cmbprep-home-*"))
        cmd = [*CMBPREP, str(tiny), str(base / "out"), "participant", "-w",
               str(base / "work"), "--participant-label", "99"]
        if foreign:
            cmd = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                   *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert result.returncode == 18, result.stderr  # got as far as the selection
        after = set(Path("/tmp").glob("matplotlib-*")) | set(
            Path("/tmp").glob("cmbprep-home-*"))
        assert not after - before
    finally:
        if foreign:
            shutil.rmtree(base, ignore_errors=True)


# -- output sets as units ---------------------------------------------------------------------

def _stage(staging: Path, files: dict) -> None:
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)


def test_rerun_with_other_settings_replaces_the_unit_as_a_whole(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out" / ".cmbprep" / "staging" / "sub-01"
    entities = {"subject": "01"}
    _stage(staging, {"sub-01/anat/sub-01_desc-cmb_cmb.tsv": "x\n1\n",
                     "sub-01/anat/sub-01_part-phase_desc-filtered_swi.nii.gz": "phase",
                     "sub-01/anat/sub-01_desc-summary_cmb.json": "{}"})
    manifest = commit_unit(staging, out, entities, {"swi_power": 4})
    assert manifest == manifest_path(out, entities)
    assert check_unit_manifest(manifest, out, verify=(".tsv",)) is None
    first = json.loads(manifest.read_text())
    assert first["Complete"] and first["Settings"] == {"swi_power": 4}
    assert not staging.exists()

    _stage(staging, {"sub-01/anat/sub-01_desc-cmb_cmb.tsv": "x\n1\n2\n",
                     "sub-01/anat/sub-01_desc-summary_cmb.json": "{}"})
    commit_unit(staging, out, entities, {"swi_power": 2}, ["the BIDS filters ..."])
    second = json.loads(manifest.read_text())
    assert second["Settings"] == {"swi_power": 2}
    assert not (out / "sub-01/anat/sub-01_part-phase_desc-filtered_swi.nii.gz").exists()
    summary = json.loads((out / "sub-01/anat/sub-01_desc-summary_cmb.json").read_text())
    assert summary["input_warnings"] == ["the BIDS filters ..."]

    (out / "sub-01/anat/sub-01_desc-cmb_cmb.tsv").write_text("x\n9\n9\n")  # same size
    assert "checksum" in check_unit_manifest(manifest, out, verify=(".tsv",))
    (out / "sub-01/anat/sub-01_desc-cmb_cmb.tsv").unlink()
    assert "missing" in check_unit_manifest(manifest, out)


def _unit_files(out: Path, sub: str, n_cmb: int, complete=True):
    from cmbprep.utils.io import write_json_atomic

    staging = out / ".cmbprep" / "staging" / f"sub-{sub}"
    rows = "".join(f"{i}\tlobar\tfrontal\t10.0\n" for i in range(n_cmb))
    _stage(staging, {
        f"sub-{sub}/anat/sub-{sub}_desc-cmb_cmb.tsv":
            "cmb_id\tmars_category\tlobe\tvolume_mm3\n" + rows,
        f"sub-{sub}/anat/sub-{sub}_desc-summary_cmb.json": json.dumps({"detector": "x"})})
    manifest = commit_unit(staging, out, {"subject": sub}, {"swi_power": 4})
    if not complete:  # what a run killed while moving the files leaves
        write_json_atomic(manifest, {"Unit": f"sub-{sub}", "Complete": False})


def test_group_counts_only_complete_units_and_writes_nothing_on_bad_options(tmp_path):
    from cmbprep.errors import DataError
    from cmbprep.group import run_group

    out, bids = tmp_path / "out", tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text(
        "participant_id\tgroup\tage\nsub-01\tpatient\t60\nsub-02\tcontrol\t55\n"
        "sub-03\tpatient\t70\n")
    _unit_files(out, "01", 3)
    _unit_files(out, "02", 0)
    _unit_files(out, "03", 5, complete=False)
    with pytest.raises(DataError, match="no column 'site'"):
        run_group(out, bids, group_column="site")
    assert not list(out.glob("group_*"))  # nothing written before the check failed
    written = run_group(out, bids)
    assert any(s.startswith("sub-03: incomplete") for s in written["skipped"])
    table = (out / "group_cmb.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in table[1:]] == ["sub-01", "sub-02"]
    provenance = json.loads((out / "group_cmb_provenance.json").read_text())
    for name, digest in provenance["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert not (out / ".cmbprep").exists()


# -- byte-identical reruns ----------------------------------------------------------------------

def test_transforms_and_sidecars_are_byte_identical(tmp_path):
    import h5py

    from cmbprep.interfaces.bids import DerivativesDataSink

    source = tmp_path / "xfm.h5"
    with h5py.File(source, "w") as handle:  # HDF5 records times by default
        handle.create_dataset("TransformGroup/0/TransformParameters",
                              data=np.arange(12, dtype=np.float32))
        handle.create_dataset("TransformGroup/0/TransformType",
                              data=np.array([b"AffineTransform_float_3_3"], dtype=object),
                              dtype=h5py.string_dtype("ascii"))
    digests = []
    for attempt in range(2):
        sink = DerivativesDataSink(base_directory=str(tmp_path / f"out{attempt}"),
                                   in_file=str(source), entities={"subject": "01"},
                                   suffix="xfm", meta_dict={"registration": {
                                       "duration_s": {"linear": 1.0 + attempt},
                                       "affine_scale": 1.0}})
        result = sink.run(cwd=str(tmp_path))
        out = Path(result.outputs.out_file)
        meta = json.loads(Path(result.outputs.out_meta).read_text())
        assert meta["registration"] == {"affine_scale": 1.0}  # no run times
        digests.append((hashlib.sha256(out.read_bytes()).hexdigest(),
                        hashlib.sha256(Path(result.outputs.out_meta).read_bytes())
                        .hexdigest()))
        time.sleep(1.1)
    assert digests[0] == digests[1]
    with h5py.File(tmp_path / "out0" / "sub-01" / "anat" / "sub-01_xfm.h5") as handle:
        assert handle["TransformGroup/0/TransformParameters"][()].tolist() == list(range(12))
        assert handle["TransformGroup/0/TransformType"][0] == b"AffineTransform_float_3_3"


def test_phantom_scanner_swi_dataset_passes_validation(tmp_path):
    from cmbprep.testing.phantom import write_bids_dataset
    from cmbprep.utils.bids import validate_bids_dataset

    root = write_bids_dataset(tmp_path / "bids", n_subjects=1, input_kind="swi",
                              n_controls=0)
    validate_bids_dataset(root)


# -- slow: the participant level on the phantom --------------------------------------------------

@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cmbprep.testing.phantom import write_example_dataset

    root = tmp_path_factory.mktemp("reliability")
    return root, write_example_dataset(root / "bids")


@pytest.mark.slow
def test_killed_rerun_with_other_settings_keeps_the_complete_set(phantom):
    root, bids = phantom
    out, work = root / "out-rerun", root / "work-rerun"
    args = [str(bids), str(out), "participant", "--participant-label", "01", "-w",
            str(work), "--nprocs", "2", "--omp-nthreads", "1"]
    assert cli_run.main(args) == 0
    manifest = out / "sub-01" / "anat" / "sub-01_manifest.json"
    first = manifest.read_bytes()
    proc = subprocess.Popen([*CMBPREP, *args, "--swi-power", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(25)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert manifest.read_bytes() == first  # the power-4 set is intact and complete
    assert check_unit_manifest(manifest, out, verify=(".tsv", ".json")) is None
    # the same command again gives the same bytes (no run times, no HDF5 time stamps)
    assert cli_run.main(args) == 0
    assert manifest.read_bytes() == first


@pytest.mark.slow
def test_mixed_valid_and_invalid_participants_exit_19(phantom, capsys):
    root, bids = phantom
    broken = root / "bids-mixed"
    subprocess.run(["cp", "-r", str(bids), str(broken)], check=True)
    (broken / "sub-02" / "anat" / "sub-02_part-mag_T2starw.json").write_text("{broken")
    out = root / "out-mixed"
    code = cli_run.main([str(broken), str(out), "participant", "--participant-label",
                         "01", "02", "-w", str(root / "work-rerun"), "--nprocs", "2",
                         "--omp-nthreads", "1"])
    err = capsys.readouterr().err
    assert code == 19, err
    assert "sub-02 failed" in err and "sub-02_part-mag_T2starw.json" in err
    assert (out / "sub-01" / "anat" / "sub-01_manifest.json").exists()
    assert not (out / "sub-02").exists()


# -- an empty participant folder, concurrent group runs -------------------------------------------

def test_empty_participant_folder_is_a_listed_failure_exit_19(tmp_path):
    """``sub-03/`` with nothing in it, beside a usable participant, and no
    --participant-label: listed as failed (one line), detected before the graph runs,
    the other participant processed, exit 19."""
    tiny = make_tiny_gre_dataset(tmp_path / "bids", subjects=("01",))
    (tiny / "sub-03" / "anat").mkdir(parents=True)
    out = tmp_path / "out"
    result = subprocess.run([*CMBPREP, str(tiny), str(out), "participant", "-w",
                             str(tmp_path / "work"), "--nprocs", "1", "--omp-nthreads",
                             "1"], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    err = result.stderr
    assert result.returncode == 19, err
    lines = err.splitlines()
    skipped = [x for x in lines if "sub-03 skipped" in x]
    assert skipped == [f"cmbprep: warning: sub-03 skipped: {tiny / 'sub-03'}: no image "
                       "files (an empty anat/ folder?)"]
    # announced before the graph runs, listed among the failures at the end
    assert lines.index(skipped[0]) < next(i for i, x in enumerate(lines)
                                          if "participant unit(s) with" in x)
    assert [x for x in lines if x.startswith("cmbprep: error: sub-03 failed:")] == [
        f"cmbprep: error: sub-03 failed: {tiny / 'sub-03'}: no image files (an empty "
        "anat/ folder?)"]
    assert "1 of 2 participant unit(s) failed" in lines[-1]
    assert (out / "sub-01" / "anat" / "sub-01_manifest.json").exists()
    assert not (out / "sub-03").exists()
    # asked for by label it is an error of its own (exit 66), as before
    code = cli_run.main([str(tiny), str(tmp_path / "out2"), "participant",
                         "--participant-label", "03", "-w", str(tmp_path / "work2")])
    assert code == 66


def _group_tree(root: Path) -> tuple[Path, Path]:
    out, bids = root / "out", root / "bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    (bids / "participants.tsv").write_text(
        "participant_id\tgroup\tage\n" + "".join(
            f"sub-{i:02d}\t{'patient' if i % 2 else 'control'}\t{50 + i}\n"
            for i in range(1, 9)))
    (bids / "sub-01").mkdir()
    for i in range(1, 9):
        _unit_files(out, f"{i:02d}", i % 3)
    return bids, out


def test_second_group_run_on_the_same_output_refuses(tmp_path):
    from cmbprep.utils.io import group_lock

    bids, out = _group_tree(tmp_path)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with group_lock(out):  # what a running group level holds
        result = subprocess.run([*CMBPREP, str(bids), str(out), "group"],
                                capture_output=True, text=True)
        assert result.returncode == 75, result.stderr
        [line] = [x for x in result.stderr.splitlines() if "error" in x]
        assert line.startswith(f"cmbprep: error: {out}: another cmbprep group run is "
                               "writing the group files of this output folder "
                               f"(pid {os.getpid()} on ")
        assert sorted(p.relative_to(out) for p in out.rglob("*") if ".cmbprep" not in
                      p.parts) == [p for p in before if ".cmbprep" not in p.parts]
    assert not (out / ".cmbprep").exists()  # the lock went with its holder

    # two real group runs started together: each exits 0 or 75, never an error of a
    # half-written set; the files on disk are one run's set (checksums of provenance)
    procs = [subprocess.Popen([*CMBPREP, str(bids), str(out), "group"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 75]), results
    provenance = json.loads((out / "group_cmb_provenance.json").read_text())
    assert sorted(provenance["files"]) == sorted(p.name for p in out.glob("group_*")
                                                 if p.name != "group_cmb_provenance.json")
    for name, digest in provenance["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert not (out / ".cmbprep").exists()


@pytest.mark.slow
def test_two_fresh_runs_give_byte_identical_outputs(phantom):
    """The participant level twice, into two output folders with two fresh work
    folders: every file is byte for byte the same, except ``logs/config-<run id>.toml``
    (named by the run id, which holds the start time; one per run by design)."""
    import re

    root, bids = phantom
    outputs = []
    for attempt in (1, 2):
        out = root / f"out-bytes{attempt}"
        assert cli_run.main([str(bids), str(out), "participant", "--participant-label",
                             "01", "-w", str(root / f"work-bytes{attempt}"), "--nprocs",
                             "2", "--omp-nthreads", "1"]) == 0
        files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
        configs = [rel for rel in files
                   if re.fullmatch(r"logs/config-\d{8}-\d{6}_[0-9a-f]{8}\.toml", rel)]
        assert len(configs) == 1, sorted(files)
        outputs.append({rel: path for rel, path in files.items() if rel not in configs})
    first, second = outputs
    assert sorted(first) == sorted(second)
    assert any(rel.endswith(".h5") for rel in first) and "sub-01.html" in first
    assert len(first) > 20
    differ = [rel for rel in sorted(first)
              if first[rel].read_bytes() != second[rel].read_bytes()]
    assert not differ
