"""``cmbprep`` entry point: parse, check, build the graph, run it, write reports.

Exit codes (documented in ``docs/usage.rst``; the draft BIDS execution specification):

== ================================================================================
0  success
1  anything else (an unexpected failure; the message points at the crash file)
16 the input dataset fails BIDS validation
17 unknown analysis level
18 participant/session labels or BIDS filters select nothing
64 other usage errors (bad flags, output or work dir inside the input dataset)
65 unreadable or inconsistent data
66 ``bids_dir`` missing, or a participant without usable SWI input
73 the output (or work) folder cannot be created
74 input/output error while running (e.g. an input file that cannot be read, such
   as a dangling git-annex symlink)
== ================================================================================
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import CmbprepError, IOFailure, OutputError, UsageError

LOGGER = logging.getLogger("cmbprep")

EXIT_CODES = {
    0: "success",
    1: "unexpected failure",
    16: "input dataset fails BIDS validation",
    17: "unknown analysis level",
    18: "labels or filters select nothing",
    64: "usage error",
    65: "unreadable or inconsistent data",
    66: "required input missing",
    73: "output cannot be created",
    74: "input/output error",
}


def _setup_logging(verbosity: int) -> None:
    """cmbprep logs at INFO (DEBUG with -vv); Nipype's own loggers at WARNING (INFO with
    -v, DEBUG with -vv). Nipype keeps its own handlers, so nothing is printed twice."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [cmbprep] %(levelname)s: "
                                           "%(message)s", datefmt="%y%m%d-%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.propagate = False
    LOGGER.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    nipype_level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).setLevel(nipype_level)
    # pybids' schema tools announce their schema at INFO on the root logger.
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)


def _is_within(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents


def check_paths(settings) -> None:
    """Reject output or work folders that would write into the input dataset."""
    from ..errors import InputMissingError

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
        except (OSError, ValueError) as exc:
            raise UsageError(f"{settings.detector_model}: --detector-model is not a "
                             f"cmbprep classifier ({exc})") from exc


def make_folder(path: Path, what: str) -> Path:
    """Create ``path`` (and parents) or raise :class:`OutputError` (exit 73)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cmbprep-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the {what} ({exc.strerror or exc})") \
            from exc
    return path


def _plugin(settings) -> tuple[str, dict]:
    import yaml

    if settings.use_plugin is not None:
        try:
            content = yaml.safe_load(settings.use_plugin.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{settings.use_plugin}: not valid YAML ({exc})") from exc
        if not isinstance(content, dict) or "plugin" not in content:
            raise UsageError(f"{settings.use_plugin}: must define 'plugin' (and "
                             "optionally 'plugin_args')")
        return content["plugin"], dict(content.get("plugin_args") or {})
    nprocs = settings.resolved_nprocs()
    if nprocs == 1:
        return "Linear", {}
    args = {"n_procs": nprocs, "raise_insufficient": False,
            "maxtasksperchild": 1}
    if settings.mem_gb:
        args["memory_gb"] = settings.mem_gb
    return "MultiProc", args


def _crash_exit_code(crash_dir: Path) -> tuple[int, str]:
    """Map the crash files of a failed run to an exit code and a one-line message."""
    from ..errors import CmbprepError as Base

    classes = {cls.__name__: cls for cls in _all_subclasses(Base)}
    crashes = sorted(crash_dir.glob("crash-*.txt")) if crash_dir.exists() else []
    for crash in crashes:
        text = crash.read_text(errors="replace")
        for line in reversed(text.splitlines()):
            line = line.strip()
            for name, cls in classes.items():
                for prefix in (f"cmbprep.errors.{name}: ", f"{name}: "):
                    if line.startswith(prefix):
                        return cls.exit_code, line[len(prefix):]
        for line in reversed(text.splitlines()):
            if line.strip().startswith(("OSError", "FileNotFoundError", "PermissionError",
                                        "IsADirectoryError")):
                return 74, f"{line.strip()} (see {crash})"
    if crashes:
        return 1, f"processing failed, see {crashes[0]}"
    return 1, "processing failed (no crash file was written)"


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def preflight(units) -> None:
    """Read every input once before the graph runs (fail early, name the file)."""
    from ..interfaces.conform import check_unit_inputs

    for unit in units:
        for warning in check_unit_inputs(unit) or []:
            LOGGER.warning("%s: %s", unit.name, warning)


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


def run_participant(settings) -> int:
    """Participant level: one graph with one sub-workflow per participant unit."""
    from ..reports.participant import assemble_participant_reports
    from ..utils import bids as bids_utils
    from ..utils.derivatives import write_dataset_files

    if not settings.skip_bids_validation:
        bids_utils.validate_bids_dataset(settings.bids_dir)
    layout = bids_utils.load_layout(settings.bids_dir)
    queries = bids_utils.load_filters(settings.bids_filter_file)
    subjects = bids_utils.select_subjects(layout, settings.participant_label)
    units = []
    for subject in subjects:
        units.extend(bids_utils.collect_inputs(layout, subject,
                                               settings.session_label or None, queries))
    preflight(units)

    make_folder(settings.output_dir, "output folder")
    make_folder(settings.work_dir / f"cmbprep_{settings.version.replace('.', '_')}"
                          "_wf", "work folder")
    settings.run_uuid = (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S_")
                         + uuid.uuid4().hex[:8])
    settings.to_toml(settings.work_dir / f"config-{settings.run_uuid}.toml")
    log_dir = make_folder(settings.output_dir / "logs", "log folder")
    settings.to_toml(log_dir / f"config-{settings.run_uuid}.toml")
    write_dataset_files(settings)

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(settings.resolved_omp_nthreads())
    from ..workflows.base import init_cmbprep_wf

    workflow = init_cmbprep_wf(settings, units)
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
    if settings.write_graph:
        _write_graph(workflow, settings.work_dir)
    plugin, plugin_args = _plugin(settings)
    LOGGER.info("Running %d participant unit(s) with %s", len(units), plugin)
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError:
        code, message = _crash_exit_code(crash_dir)
        print(f"cmbprep: error: {message}", file=sys.stderr)
        return code
    reports = assemble_participant_reports(settings.output_dir, units)
    for report in reports:
        print(f"cmbprep: participant report: {report}")
    return 0


def run_group(settings) -> int:
    """Group level: tables, models and a report from the participant outputs only."""
    from ..group import run_group as group_level

    if not settings.output_dir.is_dir():
        from ..errors import InputMissingError
        raise InputMissingError(f"{settings.output_dir}: no participant outputs (run the "
                                "participant level first)")
    written = group_level(
        settings.output_dir, settings.bids_dir,
        covariates_file=settings.covariates_file,
        group_column=settings.group_column,
        prevalence_by=tuple(settings.prevalence_by),
        model=settings.model,
        participant_labels=settings.participant_label or None,
    )
    report = written.get("report") if isinstance(written, dict) else None
    if report:
        print(f"cmbprep: group report: {report}")
    return 0


def main(argv=None) -> int:
    """Run cmbprep; return the exit code (see the module docstring)."""
    from .parser import parse_args

    # Nothing is fetched at run time: Nipype would otherwise ask a remote server for its
    # latest version whenever an interface is created (etelemetry), a 5 s time-out per
    # attempt on an offline node. The variable is inherited by every worker process.
    os.environ["NIPYPE_NO_ET"] = "1"
    try:
        settings = parse_args(argv)
        _setup_logging(settings.verbosity)
        check_paths(settings)
        if settings.analysis_level == "participant":
            return run_participant(settings)
        return run_group(settings)
    except CmbprepError as exc:
        print(f"cmbprep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"cmbprep: error: {IOFailure.__name__}: {exc}", file=sys.stderr)
        return IOFailure.exit_code
    except Exception as exc:  # noqa: BLE001 - the documented catch-all exit code 1
        LOGGER.debug("unexpected failure", exc_info=True)
        print(f"cmbprep: error: unexpected {type(exc).__name__}: {exc} (rerun with -vv "
              "for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
