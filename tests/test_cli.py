"""The command line: argument parsing, config round trip and every documented exit code.

Each exit-code test runs the real ``main`` (or the installed ``cmbprep`` script) on a
dataset on disk and checks the code and that the one-line message names the culprit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cmbprep.cli import run as cli_run
from cmbprep.cli.parser import parse_args
from cmbprep.errors import UsageError
from cmbprep.config import Settings

from .conftest import make_tiny_gre_dataset, write_json, write_nifti


def _main(capsys, *args):
    code = cli_run.main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def test_parser_spellings_and_label_prefixes(tmp_path):
    settings = parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                           "--participant_label", "sub-01", "02", "--session-label",
                           "ses-1", "--nprocs", "2", "--omp-nthreads", "1", "--mem-gb",
                           "4", "--random-seed", "7", "-w", str(tmp_path / "w"),
                           "--detector", "bian2013", "-vv"])
    assert settings.participant_label == ["01", "02"]
    assert settings.session_label == ["1"]
    assert (settings.nprocs, settings.omp_nthreads, settings.mem_gb) == (2, 1, 4.0)
    assert settings.random_seed == 7 and settings.detector == "bian2013"
    assert settings.verbosity == 2
    assert settings.work_dir == (tmp_path / "w").absolute()


def test_config_toml_round_trip_and_flags_win(tmp_path):
    settings = parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                           "--minip-slab-mm", "6", "--random-seed", "3"])
    path = settings.to_toml(tmp_path / "config.toml")
    again = Settings.from_toml(path)
    assert again.minip_slab_mm == 6.0 and again.random_seed == 3
    assert again.bids_dir == settings.bids_dir
    merged = parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                         "--config-file", str(path), "--random-seed", "9"])
    assert merged.minip_slab_mm == 6.0  # from the file
    assert merged.random_seed == 9  # the flag wins


@pytest.mark.parametrize("key, value", [("megre_echoes", "first"), ("handedness", "up"),
                                        ("covariate_selection", "stepwise")])
def test_config_file_choices_are_checked_as_the_flags_are(tmp_path, key, value):
    path = tmp_path / "config.toml"
    path.write_text(f'[cmbprep]\n{key} = "{value}"\n')
    with pytest.raises(UsageError, match=f"config.toml: {key} must be one of .*'{value}'"):
        parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                    "--config-file", str(path)])
    path.write_text('[cmbprep]\nmegre_echoes = "fit"\n')
    assert Settings.from_toml(path).megre_echoes == "fit"


def test_detector_choices_are_the_detectors_that_exist():
    # the parser keeps its own copy so that ``--help`` does not import the detectors
    from cmbprep.algorithms.detection import DETECTORS
    from cmbprep.cli.parser import DETECTORS as CHOICES

    assert CHOICES == DETECTORS
    for name in DETECTORS:
        assert parse_args(["in", "out", "participant", "--detector", name]).detector == name


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--version"])
    assert exc.value.code == 0
    assert "cmbprep v" in capsys.readouterr().out


# -- exit codes ---------------------------------------------------------------------------

def test_exit_16_invalid_bids(tmp_path, capsys):
    root = make_tiny_gre_dataset(tmp_path / "bids")
    write_nifti(root / "sub-01" / "anat" / "sub-01_wrong.nii.gz", np.zeros((2, 2, 2)))
    code, err = _main(capsys, root, tmp_path / "out", "participant")
    assert code == 16 and "sub-01_wrong.nii.gz" in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_scanner_swi_in_bidsignore_passes_validation(tmp_path, capsys):
    root = make_tiny_gre_dataset(tmp_path / "bids", kind="swi")
    # Validation passes, then the unknown participant label stops the run (18, not 16).
    code, err = _main(capsys, root, tmp_path / "out", "participant",
                      "--participant-label", "99")
    assert code == 18 and "sub-99" in err


def test_exit_17_unknown_analysis_level(tiny_gre, tmp_path, capsys):
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "subject")
    assert code == 17 and "subject" in err


def test_exit_18_selection(tmp_path, capsys):
    root = make_tiny_gre_dataset(tmp_path / "bids", sessions=("1",))
    code, err = _main(capsys, root, tmp_path / "out", "participant",
                      "--participant-label", "07")
    assert code == 18 and "sub-07" in err
    code, err = _main(capsys, root, tmp_path / "out", "participant", "--session-label", "5")
    assert code == 18 and "session" in err
    filters = write_json(tmp_path / "filters.json",
                         {key: {"acquisition": "none"} for key in
                          ("megre_mag", "mag", "swi", "magnitude")})
    code, err = _main(capsys, root, tmp_path / "out", "participant", "--bids-filter-file",
                      filters)
    assert code == 18 and "filters" in err


@pytest.mark.parametrize("args", [
    ["--nprocs", "-1"],
    ["--no-such-flag"],
    ["--detector", "magic"],
    ["--random-seed", "0"],  # ANTs: 0 = no fixed seed (not reproducible)
])
def test_exit_64_bad_flags(tiny_gre, tmp_path, capsys, args):
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant", *args)
    assert code == 64 and err.startswith("cmbprep: error:")


def test_exit_64_unusable_detector_model(tiny_gre, tmp_path, capsys):
    from cmbprep.algorithms.detection.classifier import load_model

    not_a_model = tmp_path / "model.json"
    not_a_model.write_text('{"kind": "something else"}')
    not_json = tmp_path / "truncated.json"
    not_json.write_text('{"kind": "cmbprep-boosted-trees", "phase": ')
    damaged = tmp_path / "damaged.json"  # a stack entry without the network it needs
    model = load_model()
    damaged.write_text(json.dumps(dict(model, phase=dict(model["phase"], stack={}))))
    for args, what in ((["--detector-model", tmp_path / "missing.json"], "missing.json"),
                       (["--detector-model", not_a_model], "not a cmbprep classifier"),
                       (["--detector-model", not_json], "truncated.json: not a cmbprep "
                        "classifier model (not JSON"),
                       (["--detector-model", damaged], f"--detector-model {damaged}: not a "
                        "usable cmbprep classifier model: phase has a 'stack' entry but the "
                        "model has no network"),
                       (["--detector-model", not_a_model, "--detector", "bian2013"],
                        "needs --detector cmbprep")):
        code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant", *args)
        assert code == 64 and what in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_detector_model_is_part_of_the_cache_key(tmp_path):
    import shutil

    from cmbprep.algorithms.detection import detector_code_id
    from cmbprep.algorithms.detection.classifier import DEFAULT_MODEL_PATH
    from cmbprep.workflows.detection import init_detection_wf

    copy = tmp_path / "copy.json"
    shutil.copy(DEFAULT_MODEL_PATH, copy)
    assert detector_code_id("cmbprep", copy) == detector_code_id("cmbprep")
    copy.write_text(copy.read_text().replace('"version"', '"version_"', 1))
    assert detector_code_id("cmbprep", copy) != detector_code_id("cmbprep")
    wf = init_detection_wf(detector="cmbprep", seed=42, omp_nthreads=1, model=copy)
    find = wf.get_node("find_candidates")
    assert find.inputs.parameters == {"model": str(copy)}
    assert find.inputs.code_id == detector_code_id("cmbprep", copy)


def test_exit_64_output_or_work_dir_inside_input(tiny_gre, tmp_path, capsys):
    code, err = _main(capsys, tiny_gre, tiny_gre, "participant")
    assert code == 64 and "output_dir" in err
    code, err = _main(capsys, tiny_gre, tiny_gre / "derivatives" / "cmbprep", "participant")
    assert code == 64 and "output_dir" in err
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant", "-w",
                      tiny_gre / "work")
    assert code == 64 and "work dir" in err
    assert not (tiny_gre / "work").exists() and not (tiny_gre / "derivatives").exists()


def test_exit_65_broken_sidecar(tiny_gre, tmp_path, capsys):
    sidecar = tiny_gre / "sub-01" / "anat" / "sub-01_part-phase_T2starw.json"
    sidecar.write_text("{not json")
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant")
    assert code == 65 and "sub-01_part-phase_T2starw.json" in err
    assert not (tmp_path / "out").exists()


def test_exit_65_mismatched_magnitude_and_phase(tiny_gre, tmp_path, capsys):
    phase = tiny_gre / "sub-01" / "anat" / "sub-01_part-phase_T2starw.nii.gz"
    write_nifti(phase, np.zeros((20, 24, 16)))
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant")
    assert code == 65 and "sub-01_part-phase_T2starw.nii.gz" in err and "shape" in err


def test_exit_65_corrupt_nifti(tiny_gre, tmp_path, capsys):
    mag = tiny_gre / "sub-01" / "anat" / "sub-01_part-mag_T2starw.nii.gz"
    mag.write_bytes(mag.read_bytes()[:200])
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant")
    assert code == 65 and "sub-01_part-mag_T2starw.nii.gz" in err


def test_exit_66_missing_dataset_or_input(tmp_path, capsys):
    code, err = _main(capsys, tmp_path / "nothere", tmp_path / "out", "participant")
    assert code == 66 and "nothere" in err
    root = make_tiny_gre_dataset(tmp_path / "bids", kind="t1w-only")
    code, err = _main(capsys, root, tmp_path / "out", "participant")
    assert code == 66 and "sub-01" in err and "SWI" in err


def test_exit_73_output_cannot_be_created(tiny_gre, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    code, err = _main(capsys, tiny_gre, blocker / "out", "participant")
    assert code == 73 and str(blocker / "out") in err


def test_exit_74_dangling_symlink_input(tiny_gre, tmp_path, capsys):
    # As with a git-annex dataset whose content was never fetched.
    mag = tiny_gre / "sub-01" / "anat" / "sub-01_part-mag_T2starw.nii.gz"
    mag.unlink()
    os.symlink(tmp_path / "annex" / "objects" / "missing", mag)
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant")
    assert code == 74 and "sub-01_part-mag_T2starw.nii.gz" in err


def test_exit_1_unexpected_failure(tiny_gre, tmp_path, capsys, monkeypatch):
    # The catch-all: any exception that is not one of cmbprep's own errors.
    def explode(*_args, **_kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(cli_run, "preflight", explode)
    code, err = _main(capsys, tiny_gre, tmp_path / "out", "participant")
    assert code == 1 and "ZeroDivisionError" in err


def test_installed_script_exit_code(tmp_path):
    exe = shutil.which("cmbprep") or str(Path(os.sys.executable).parent / "cmbprep")
    result = subprocess.run([exe, str(tmp_path / "missing"), str(tmp_path / "o"),
                             "participant"], capture_output=True, text=True)
    assert result.returncode == 66
    assert result.stderr.count("\n") == 1  # one line


def test_crash_file_mapping(tmp_path):
    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    (crash_dir / "crash-1-node.txt").write_text(
        "Traceback (most recent call last):\n  File x\n"
        "cmbprep.errors.DataError: /data/sub-01_part-phase_T2starw.nii.gz: not phase\n")
    code, message = cli_run._crash_exit_code(crash_dir)
    assert code == 65 and message.startswith("/data/sub-01_part-phase")
    (crash_dir / "crash-1-node.txt").write_text("Traceback\nValueError: boom\n")
    code, message = cli_run._crash_exit_code(crash_dir)
    assert code == 1 and "crash-1-node.txt" in message


def test_exit_codes_are_documented():
    docs = (Path(__file__).parents[1] / "docs" / "usage.rst").read_text()
    for code in cli_run.EXIT_CODES:
        assert f"``{code}``" in docs, f"exit code {code} missing from docs/usage.rst"
    assert json.dumps(sorted(cli_run.EXIT_CODES)) == json.dumps(
        [0, 1, 16, 17, 18, 19, 64, 65, 66, 71, 73, 74, 75, 130, 143])


def _cgroup_tree(tmp_path, *, v2_max=None, v1_quota=None):
    root = tmp_path / "cgroup"
    job = root / "slurm" / "job_7"
    job.mkdir(parents=True)
    if v2_max is not None:
        (job / "cpu.max").write_text(v2_max + "\n")
        (root / "slurm" / "cpu.max").write_text("max 100000\n")
        proc = "0::/slurm/job_7\n"
    else:
        cpu = root / "cpu" / "slurm" / "job_7"
        cpu.mkdir(parents=True)
        (cpu / "cpu.cfs_quota_us").write_text(f"{v1_quota}\n")
        (cpu / "cpu.cfs_period_us").write_text("100000\n")
        proc = "4:cpu,cpuacct:/slurm/job_7\n1:memory:/\n"
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


def test_default_nprocs_follows_the_allocation(tmp_path, monkeypatch):
    """--nprocs 0 uses the CPUs the job may use, not every core of the node."""
    from cmbprep.config import Settings, available_cpus

    affinity = len(os.sched_getaffinity(0))
    none = tmp_path / "none"
    assert available_cpus({}, none, none) == affinity
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, none, none) == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": "n/a"}, none, none) == affinity
    root, proc = _cgroup_tree(tmp_path / "v2", v2_max="50000 100000")  # half a CPU
    assert available_cpus({}, root, proc) == 1
    root, proc = _cgroup_tree(tmp_path / "v2max", v2_max="max 100000")  # no quota
    assert available_cpus({}, root, proc) == affinity
    root, proc = _cgroup_tree(tmp_path / "v1", v1_quota=100000)  # one CPU (cgroup v1)
    assert available_cpus({}, root, proc) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert Settings(bids_dir=tmp_path, output_dir=tmp_path / "o",
                    analysis_level="participant").resolved_nprocs() == 1
