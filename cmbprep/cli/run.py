"""``cmbprep`` entry point: parse, check, build the graph, run it, write reports.

Exit codes (documented in ``docs/usage.rst``; the draft BIDS execution specification):

=== ================================================================================
0   success
1   anything else (an unexpected failure; the message points at the crash file)
16  the input dataset fails BIDS validation
17  unknown analysis level
18  participant/session labels or BIDS filters select nothing
19  partial failure: some participant units failed, the others were written
64  other usage errors (bad flags, output or work dir inside the input dataset)
65  unreadable or inconsistent data
66  ``bids_dir`` missing, or a participant without usable SWI input
71  a worker process died (most often killed by the out-of-memory killer)
73  the output (or work) folder cannot be created
74  input/output error while running (e.g. an input file that cannot be read, such
    as a dangling git-annex symlink, or no space left on the device)
75  another cmbprep run is writing the same participant (or, at the group level, the
    group files) into the same output folder
130 interrupted by SIGINT (Ctrl-C)
143 stopped by SIGTERM (e.g. the time limit of a SLURM job)
=== ================================================================================
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from ..errors import (CmbprepError, DataError, InputMissingError, Interrupted, IOFailure,
                      NoSpaceError, OutputError, PartialFailure, SelectionError,
                      UsageError, WorkerLostError)

LOGGER = logging.getLogger("cmbprep")

EXIT_CODES = {
    0: "success",
    1: "unexpected failure",
    16: "input dataset fails BIDS validation",
    17: "unknown analysis level",
    18: "labels or filters select nothing",
    19: "partial failure: some participant units failed",
    64: "usage error",
    65: "unreadable or inconsistent data",
    66: "required input missing",
    71: "a worker process died (out of memory?)",
    73: "output cannot be created",
    74: "input/output error (or no space left on device)",
    75: "busy: another run writes the same participant or group files",
    130: "interrupted (SIGINT)",
    143: "stopped (SIGTERM)",
}

#: Errors of one participant (or unit) that do not stop the others of a run.
_UNIT_ERRORS = (InputMissingError, DataError, SelectionError, IOFailure)


def _setup_logging(verbosity: int) -> None:
    """cmbprep logs at INFO (DEBUG with -vv); Nipype's own loggers at WARNING (INFO with
    -v, DEBUG with -vv), except that Nipype's node-failure tracebacks are only shown with
    -v: cmbprep reports each failure as one line. Python warnings print as one line."""
    from .execution import one_line_warning

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [cmbprep] %(levelname)s: "
                                           "%(message)s", datefmt="%y%m%d-%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.propagate = False
    LOGGER.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    nipype_level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).setLevel(nipype_level)
    if verbosity == 0:
        logging.getLogger("nipype.workflow").setLevel(logging.CRITICAL)
    # pybids' schema tools announce their schema at INFO on the root logger.
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)
    warnings.showwarning = one_line_warning


def _is_within(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents


def check_paths(settings) -> None:
    """Reject output or work folders that would write into the input dataset."""
    bids_dir = settings.bids_dir
    if not bids_dir.exists():
        raise InputMissingError(f"{bids_dir}: BIDS dataset folder does not exist")
    if not bids_dir.is_dir():
        raise InputMissingError(f"{bids_dir}: is not a folder")
    if _is_within(settings.output_dir, bids_dir):
        raise UsageError(f"{settings.output_dir}: output_dir must not be the BIDS "
                         f"dataset or inside it ({bids_dir})")
    if settings.analysis_level == "participant" and _is_within(settings.work_dir,
                                                               bids_dir):
        raise UsageError(f"{settings.work_dir}: work dir must not be inside the BIDS "
                         f"dataset ({bids_dir})")
    if settings.use_plugin is not None and not settings.use_plugin.is_file():
        raise UsageError(f"{settings.use_plugin}: --use-plugin file does not exist")
    if settings.bids_filter_file is not None and not settings.bids_filter_file.is_file():
        raise UsageError(f"{settings.bids_filter_file}: --bids-filter-file does not "
                         "exist")
    if settings.detector_model is not None:
        from ..algorithms.detection.classifier import load_model

        if settings.detector != "cmbprep":
            raise UsageError(f"{settings.detector_model}: --detector-model needs "
                             "--detector cmbprep")
        try:
            load_model(settings.detector_model)
        except FileNotFoundError:
            raise UsageError(f"{settings.detector_model}: --detector-model file does not "
                             "exist") from None
        except (OSError, ValueError) as exc:  # the message starts with the file's name
            raise UsageError(f"--detector-model {exc}") from None


def check_writable(path: Path, what: str) -> None:
    """Fail early (exit 73) when ``path`` could not be created or written, without
    creating anything: the folder, or its nearest existing parent, must be a writable
    folder (read-only mounts included)."""
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{path}: cannot create the {what} ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create the {what} ({probe} is not writable)")


def make_folder(path: Path, what: str) -> Path:
    """Create ``path`` (and parents) or raise :class:`OutputError` (exit 73)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cmbprep-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise NoSpaceError(f"{path}: no space left on device for the {what}") from exc
        raise OutputError(f"{path}: cannot create the {what} ({exc.strerror or exc})") \
            from exc
    return path


def _plugin(settings, status_callback=None):
    """The plugin object (or name) and its arguments.

    ``MultiProc`` (the default with more than one process, or named in
    ``--use-plugin``) is :class:`~cmbprep.cli.execution.CmbprepMultiProcPlugin`.
    """
    import yaml

    if settings.use_plugin is not None:
        try:
            content = yaml.safe_load(settings.use_plugin.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{settings.use_plugin}: not valid YAML ({exc})") from exc
        if not isinstance(content, dict) or "plugin" not in content:
            raise UsageError(f"{settings.use_plugin}: must define 'plugin' (and "
                             "optionally 'plugin_args')")
        name, args = content["plugin"], dict(content.get("plugin_args") or {})
    else:
        nprocs = settings.resolved_nprocs()
        name, args = ("Linear", {}) if nprocs == 1 else (
            "MultiProc", {"n_procs": nprocs, "raise_insufficient": False})
        if settings.mem_gb and name == "MultiProc":
            args["memory_gb"] = settings.mem_gb
    if status_callback is not None:
        args.setdefault("status_callback", status_callback)
    if name == "MultiProc":
        from .execution import CmbprepMultiProcPlugin

        return CmbprepMultiProcPlugin(plugin_args=args), args
    if name == "Linear":
        from nipype.pipeline.plugins.linear import LinearPlugin

        return LinearPlugin(plugin_args=args), args
    return name, args


def _crash_message(text: str, crash: Path) -> tuple[int, str]:
    """Exit code and one-line message of one crash file's text."""
    from .execution import enospc_message

    classes = {cls.__name__: cls for cls in _all_subclasses(CmbprepError)}
    lines = [line.strip() for line in text.splitlines()]
    for line in reversed(lines):
        for name, cls in classes.items():
            for prefix in (f"cmbprep.errors.{name}: ", f"{name}: "):
                if line.startswith(prefix):
                    return cls.exit_code, line[len(prefix):]
    nospace = enospc_message(text)
    if nospace:
        return NoSpaceError.exit_code, nospace
    for line in reversed(lines):
        if line.startswith(("OSError", "FileNotFoundError", "PermissionError",
                            "IsADirectoryError")):
            return 74, f"{line} (see {crash})"
    return 1, f"processing failed, see {crash}"


def _crash_exit_code(crash_dir: Path) -> tuple[int, str]:
    """Map the crash files of a failed run to an exit code and a one-line message."""
    crashes = sorted(crash_dir.glob("crash-*.txt")) if crash_dir.exists() else []
    for crash in crashes:
        code, message = _crash_message(crash.read_text(errors="replace"), crash)
        if code != 1:
            return code, message
    if crashes:
        return 1, f"processing failed, see {crashes[0]}"
    return 1, "processing failed (no crash file was written)"


def _first_crash_per(crash_dir: Path, key_of_node) -> dict:
    """``{key: (code, message)}`` from the crash files, the first per key;
    ``key_of_node(node name)`` gives a crash's key (None: not counted)."""
    found = {}
    crashes = sorted(crash_dir.glob("crash-*.txt")) if crash_dir.exists() else []
    for crash in crashes:
        text = crash.read_text(errors="replace")
        match = re.search(r"^Node: (\S+)", text, flags=re.MULTILINE)
        key = key_of_node(match.group(1)) if match else None
        if key and key not in found:
            found[key] = _crash_message(text, crash)
    return found


def _crashes_by_unit(crash_dir: Path) -> dict[str, tuple[int, str]]:
    """``{unit node name: (code, message)}`` from the crash files (first per unit)."""
    from .execution import split_node_name

    return _first_crash_per(crash_dir, lambda node: split_node_name(node)[0])


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _check_dimensions(unit) -> None:
    """Images must be 3D, or 4D with one volume per echo (header only, no data read)."""
    import nibabel as nib

    per_file = 1
    if unit.kind == "megre" and len(unit.magnitude) == 1 and unit.echo_times:
        per_file = len(unit.echo_times)  # several echoes in one 4D file
    expected = {path: per_file for path in list(unit.magnitude) + list(unit.phase)}
    if unit.t1w:
        expected[unit.t1w] = 1
    for path, allowed in expected.items():
        try:
            shape = nib.load(str(path)).shape
        except Exception:  # noqa: BLE001 - read errors are reported by check_unit_inputs
            continue
        extra = [int(n) for n in shape[3:]]
        if any(n > 1 for n in extra[1:]):
            raise DataError(f"{path}: image has {len(shape)} dimensions {tuple(shape)}; "
                            "cmbprep reads 3D images, or 4D with one volume per echo")
        volumes = extra[0] if extra else 1
        if volumes != allowed and volumes > 1:
            raise DataError(f"{path}: image has {volumes} volumes; expected {allowed} "
                            "(3D, or one volume per EchoTime listed in its sidecar)")


def preflight(units, failures=None):
    """Read every input once before the graph runs (fail early, name the file).

    With ``failures`` (a list), a unit whose inputs are bad is left out and its error
    appended as ``(unit name, error)``; otherwise the first error is raised.
    """
    from ..interfaces.conform import check_unit_inputs

    kept = []
    for unit in units:
        try:
            _check_dimensions(unit)
            found = check_unit_inputs(unit) or []
        except _UNIT_ERRORS as exc:
            if failures is None:
                raise
            failures.append((unit.name, exc))
            print(f"cmbprep: warning: {unit.name} skipped: {exc}", file=sys.stderr)
            continue
        for warning in found:
            LOGGER.warning("%s: %s", unit.name, warning)
            if hasattr(unit, "warnings"):
                unit.warnings.append(str(warning))
        kept.append(unit)
    return kept


def _write_graph(workflow, work_dir: Path) -> None:
    """Write the graph as Graphviz ``.dot`` (and SVG when ``dot`` is installed)."""
    import shutil

    dotfile = work_dir / "graph.dot"
    if shutil.which("dot"):
        workflow.write_graph(dotfilename=str(dotfile), graph2use="colored", format="svg",
                             simple_form=True)
    else:
        from nipype.pipeline.engine.utils import _write_detailed_dot, generate_expanded_graph

        graph = workflow._create_flat_graph()
        _write_detailed_dot(generate_expanded_graph(graph), str(dotfile))
        LOGGER.warning("Graphviz 'dot' not found: wrote %s only (no SVG)", dotfile)


def collect_units(settings, layout, queries, subjects, failures):
    """The processing units of every participant. A participant whose inputs are
    missing or inconsistent is left out (its error appended to ``failures``) when the
    run has other participants; with one participant the error is raised."""
    from ..utils import bids as bids_utils

    units = []
    for subject in subjects:
        try:
            units.extend(bids_utils.collect_inputs(layout, subject,
                                                   settings.session_label or None,
                                                   queries))
        except _UNIT_ERRORS as exc:
            if len(subjects) == 1:
                raise
            failures.append((f"sub-{subject}", exc))
            print(f"cmbprep: warning: sub-{subject} skipped: {exc}", file=sys.stderr)
    return units


def _configure_commit_nodes(workflow, settings, units) -> None:
    """Give each unit's commit node the run settings and the unit's input warnings."""
    from ..interfaces.bids import CommitUnit
    from ..utils.derivatives import manifest_settings

    by_name = {unit.name: unit for unit in units}
    recorded = manifest_settings(settings)
    for name in workflow.list_node_names():
        node = workflow.get_node(name)
        if node is not None and isinstance(node.interface, CommitUnit):
            unit = by_name.get(node.inputs.unit_name)
            node.inputs.settings = recorded
            node.inputs.input_warnings = list(getattr(unit, "warnings", []) or [])


def _node_unit_names(units) -> dict:
    """Unit names as the graph's node names spell them -> the BIDS unit names."""
    from ..workflows.base import _node_name

    return {f"sub-{_node_name(unit.name[len('sub-'):])}": unit.name for unit in units}


def run_participant(settings) -> int:
    """Participant level: one graph with one sub-workflow per participant unit."""
    from ..reports.participant import assemble_participant_reports
    from ..utils import bids as bids_utils
    from ..utils.derivatives import write_dataset_files
    from ..utils.io import participant_locks

    # Writability first: a read-only output folder fails before any input is read.
    check_writable(settings.output_dir, "output folder")
    check_writable(settings.work_dir, "work folder")
    if not settings.skip_bids_validation:
        bids_utils.validate_bids_dataset(settings.bids_dir)
    layout = bids_utils.load_layout(settings.bids_dir)
    queries = bids_utils.load_filters(settings.bids_filter_file)
    subjects = bids_utils.select_subjects(layout, settings.participant_label)
    failures = []
    if not settings.participant_label:  # a sub-<label>/ folder with no file at all
        for name, exc in bids_utils.empty_subject_folders(layout):
            failures.append((name, exc))
            print(f"cmbprep: warning: {name} skipped: {exc}", file=sys.stderr)
    units = collect_units(settings, layout, queries, subjects, failures)
    units = preflight(units, failures if len(units) + len(failures) > 1 else None)
    if not units:
        raise failures[0][1]

    make_folder(settings.output_dir, "output folder")
    make_folder(settings.work_dir / f"cmbprep_{settings.version.replace('.', '_')}"
                          "_wf", "work folder")
    with participant_locks(settings.output_dir, sorted({u.subject for u in units})):
        return _run_graph(settings, units, failures, assemble_participant_reports,
                          write_dataset_files)


def _run_graph(settings, units, failures, assemble_participant_reports,
               write_dataset_files) -> int:
    from .execution import Progress, format_duration, say

    settings.run_uuid = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S_")
                         + uuid.uuid4().hex[:8])
    settings.to_toml(settings.work_dir / f"config-{settings.run_uuid}.toml")
    log_dir = make_folder(settings.output_dir / "logs", "log folder")
    settings.to_toml(log_dir / f"config-{settings.run_uuid}.toml")
    write_dataset_files(settings)

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(settings.resolved_omp_nthreads())
    from ..workflows.base import init_cmbprep_wf

    workflow = init_cmbprep_wf(settings, units)
    _configure_commit_nodes(workflow, settings, units)
    crash_dir = settings.work_dir / "crash" / settings.run_uuid
    workflow.config["execution"].update({
        "crashdump_dir": str(crash_dir),
        "crashfile_format": "txt",
        "stop_on_first_crash": settings.stop_on_first_crash,
        "remove_unnecessary_outputs": False,
        "use_relative_paths": False,
        "get_linked_libs": False,
    })
    workflow.config["monitoring"] = {"enabled": False}
    nipype_level = {0: "WARNING", 1: "INFO"}.get(settings.verbosity, "DEBUG")
    logging_config = {"workflow_level": nipype_level, "interface_level": nipype_level,
                      "utils_level": nipype_level, "log_to_file": False}
    workflow.config["logging"] = logging_config
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_config.update_config({"logging": logging_config})
    nipype_logging.update_logging(nipype_config)
    if settings.verbosity == 0:  # failures are reported as one line each (below)
        logging.getLogger("nipype.workflow").setLevel(logging.CRITICAL)
    if settings.write_graph:
        _write_graph(workflow, settings.work_dir)
    unit_names = _node_unit_names(units)
    progress = Progress.from_workflow(workflow, unit_names)
    plugin, plugin_args = _plugin(settings, progress)
    name = plugin if isinstance(plugin, str) else type(plugin).__name__
    LOGGER.info("Running %d participant unit(s) with %s", len(units), name)
    error = None
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except (WorkerLostError, NoSpaceError):
        raise  # a worker lost, a full disk: the run cannot go on
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        error = exc
    except Exception as exc:  # noqa: BLE001 - node failures; handled per unit below
        error = exc  # (the serial plugin raises the node's own error)
    completed = {unit_names.get(u, u) for u in progress.completed_units()}
    done_units = [u for u in units if u.name in completed]
    if error is not None and not done_units:
        code, message = _crash_exit_code(crash_dir)
        if code == 1 and isinstance(error, CmbprepError):
            code, message = error.exit_code, str(error)
        print(f"cmbprep: error: {message}", file=sys.stderr)
        return code
    followed_failures = _run_longitudinal(settings, workflow.config, done_units,
                                          crash_dir / "longitudinal")
    reports = assemble_participant_reports(settings.output_dir, done_units)
    for report in reports:
        print(f"cmbprep: participant report: {report}")
    n_total = len(units) + len(failures)
    by_unit = _crashes_by_unit(crash_dir)
    for unit in units:
        if unit.name not in completed:
            key = next((k for k, v in unit_names.items() if v == unit.name), unit.name)
            code, message = by_unit.get(key, (1, f"processing failed, see {crash_dir}"))
            failures.append((unit.name, f"{message} (exit {code})"))
    say(f"cmbprep: {len(done_units)} of {n_total} participant unit(s) written in "
        f"{format_duration(progress.clock() - progress.start)}")
    for name, exc in failures + followed_failures:
        print(f"cmbprep: error: {name} failed: {exc}", file=sys.stderr)
    if failures:
        raise PartialFailure(f"{len(failures)} of {n_total} participant unit(s) failed "
                             "(listed above), the others were written; fix those and "
                             "rerun the participant level for them")
    if followed_failures:
        raise PartialFailure(f"the follow-up of {len(followed_failures)} participant "
                             "series failed (listed above); every participant unit was "
                             "written")
    return 0


def _run_longitudinal(settings, config, done_units, crash_dir) -> list:
    """Follow the microbleeds of every participant of this run with two or more
    sessions written (sessions of earlier runs included), all series in one graph so
    that their registrations run in parallel; the failures, one per participant series,
    as ``(name, message)`` with the message of its crash file."""
    import copy

    from nipype.pipeline import engine as pe

    from ..utils.derivatives import collect_session_series
    from ..workflows.longitudinal import init_longitudinal_wf
    from .execution import say

    failures, graphs = [], {}
    for subject in sorted({u.subject for u in done_units if u.entities.get("session")}):
        try:
            series_list = collect_session_series(settings.output_dir, settings.bids_dir,
                                                 subject)
        except CmbprepError as exc:
            failures.append((f"sub-{subject} (follow-up)", exc))
            continue
        for series in series_list:
            graphs[series.prefix] = (series, init_longitudinal_wf(
                series, output_dir=str(settings.output_dir), seed=settings.random_seed))
    if not graphs:
        return failures
    workflow = pe.Workflow(name="longitudinal_wf", base_dir=str(settings.work_dir))
    workflow.add_nodes([graph for _series, graph in graphs.values()])
    workflow.config = copy.deepcopy(config)
    workflow.config["execution"]["crashdump_dir"] = str(crash_dir)
    plugin, plugin_args = _plugin(settings)
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
        crashed = {}
    except (WorkerLostError, NoSpaceError):
        raise
    except Exception:  # noqa: BLE001 - reported per series, from its crash files
        crashed = _crashes_by_series(crash_dir, {g.name: prefix for prefix, (_s, g)
                                                 in graphs.items()})
        if not crashed:  # no crash file names a series: every series is in doubt
            crashed = dict.fromkeys(graphs, _crash_exit_code(crash_dir))
    for prefix, (series, _graph) in graphs.items():
        if prefix in crashed:
            code, message = crashed[prefix]
            failures.append((f"{prefix} (follow-up)", f"{message} (exit {code})"))
        else:
            say(f"cmbprep: {prefix}: {len(series.sessions)} sessions followed")
    return failures


def _crashes_by_series(crash_dir: Path, series_by_graph: dict) -> dict:
    """``{series prefix: (code, message)}`` of the crash files naming a series'
    sub-graph (``series_by_graph``: sub-graph name -> series prefix)."""
    def series_of(node):
        return next((series_by_graph[part] for part in node.split(".")
                     if part in series_by_graph), None)

    return _first_crash_per(crash_dir, series_of)


def run_group(settings) -> int:
    """Group level: tables, models and a report from the participant outputs only."""
    from ..group import run_group as group_level

    if not settings.output_dir.is_dir():
        raise InputMissingError(f"{settings.output_dir}: no participant outputs (run the "
                                "participant level first)")
    written = group_level(
        settings.output_dir, settings.bids_dir,
        covariates_file=settings.covariates_file,
        group_column=settings.group_column,
        prevalence_by=tuple(settings.prevalence_by),
        model=settings.model,
        participant_labels=settings.participant_label or None,
        rater=settings.rater,
        covariate_selection=settings.covariate_selection,
        keep_failed_qc=settings.keep_failed_qc,
        reviewed_only=settings.reviewed_only,
    )
    report = written.get("report") if isinstance(written, dict) else None
    if report:
        print(f"cmbprep: group report: {report}")
    return 0


def _private_temp_home(environ=None) -> str | None:
    """Nothing may need HOME (unreadable under Apptainer with a foreign uid): when HOME
    is unset or not a writable folder, HOME (read by pybids at import) and
    ``MPLCONFIGDIR`` point to a private temporary folder, removed when the run ends.
    Returns that folder, or ``None`` when HOME is usable."""
    import atexit
    import shutil
    import tempfile

    environ = os.environ if environ is None else environ
    home = environ.get("HOME", "")
    if home and os.path.isdir(home) and os.access(home, os.R_OK | os.W_OK | os.X_OK):
        return None
    folder = tempfile.mkdtemp(prefix="cmbprep-home-")
    environ["HOME"] = folder
    environ.setdefault("MPLCONFIGDIR", folder)
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder,
                                                                   ignore_errors=True))
    return folder


def main(argv=None) -> int:
    """Run cmbprep; return the exit code (see the module docstring)."""
    # Nothing is fetched at run time: Nipype would otherwise ask a remote server for its
    # latest version whenever an interface is created (etelemetry), a 5 s time-out per
    # attempt on an offline node. Set before anything imports nipype (.execution does);
    # the variable is inherited by every worker process.
    os.environ["NIPYPE_NO_ET"] = "1"
    from .execution import stop_all_children, stop_on_signals
    from .parser import parse_args

    _private_temp_home()
    try:
        with stop_on_signals():
            try:
                settings = parse_args(argv)
                _setup_logging(settings.verbosity)
                check_paths(settings)
                if settings.analysis_level == "participant":
                    return run_participant(settings)
                return run_group(settings)
            finally:
                stop_all_children(grace_s=2.0)
    except Interrupted as exc:
        stopped = stop_all_children(grace_s=2.0)
        print(f"cmbprep: error: {exc}; stopped the worker processes"
              f"{f' ({len(stopped)} still running)' if stopped else ''}; nothing was "
              "half-written: rerun with the same -w to resume", file=sys.stderr)
        return exc.exit_code
    except CmbprepError as exc:
        print(f"cmbprep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"cmbprep: error: {where}no space left on device; free space (or give "
                  "-w/--work-dir a folder on a larger disk), then rerun with the same -w "
                  "to resume", file=sys.stderr)
            return NoSpaceError.exit_code
        print(f"cmbprep: error: {IOFailure.__name__}: {exc}", file=sys.stderr)
        return IOFailure.exit_code
    except Exception as exc:  # noqa: BLE001 - the documented catch-all exit code 1
        LOGGER.debug("unexpected failure", exc_info=True)
        print(f"cmbprep: error: unexpected {type(exc).__name__}: {exc} (rerun with -vv "
              "for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
