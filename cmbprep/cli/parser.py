"""The BIDS-App command line: ``cmbprep bids_dir output_dir {participant,group} [options]``.

Spellings follow fMRIPrep. Argument errors exit 64 (usage), an unknown analysis level
exits 17, as the draft BIDS execution specification recommends (argparse's own exit
status 2 is never used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..config import COVARIATE_SELECTIONS, HANDEDNESS, MEGRE_ECHOES, Settings
from ..errors import AnalysisLevelError, UsageError

ANALYSIS_LEVELS = ("participant", "group")
DETECTORS = ("cmbprep", "bian2013")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`UsageError` instead of exiting with 2."""

    def error(self, message):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _random_seed(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"must be >= 1, got {value} (ANTs takes 0 as 'no fixed seed', so the "
            "registration would differ from run to run)")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _drop_prefix(prefix: str):
    def convert(value: str) -> str:
        return value[len(prefix):] if value.startswith(prefix) else value

    return convert


def _add_bids_options(parser: argparse.ArgumentParser) -> None:
    """Options for filtering the BIDS queries."""
    g_bids = parser.add_argument_group("Options for filtering the BIDS queries")
    g_bids.add_argument("--participant-label", "--participant_label", nargs="+",
                        default=[], type=_drop_prefix("sub-"), metavar="LABEL",
                        help="participant labels to process (with or without 'sub-'); "
                        "default: all")
    g_bids.add_argument("--session-label", "--session_label", nargs="+", default=[],
                        type=_drop_prefix("ses-"), metavar="LABEL",
                        help="session labels to process (with or without 'ses-'); "
                        "default: all")
    g_bids.add_argument("--bids-filter-file", "--bids_filter_file", type=Path,
                        metavar="FILE",
                        help="a JSON file that overrides the default BIDS queries "
                        "(keys: swi, mag, phase, megre_mag, megre_phase, t1w)")
    g_bids.add_argument("--skip-bids-validation", "--skip_bids_validation",
                        action="store_true", help="do not validate the input dataset")


def _add_performance_options(parser: argparse.ArgumentParser) -> None:
    """Processes, threads, memory and the Nipype plugin."""
    g_perf = parser.add_argument_group("Options to handle performance")
    g_perf.add_argument("--nprocs", "--nthreads", "--n_cpus", "--n-cpus",
                        dest="nprocs", type=_positive_int, default=0,
                        help="maximum number of processes (0: the CPUs this job may use: CPU "
                        "affinity, cgroup quota, SLURM_CPUS_PER_TASK)")
    g_perf.add_argument("--omp-nthreads", type=_positive_int, default=0,
                        help="maximum threads per process, also ANTs' "
                        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS (0: min(nprocs, 8))")
    g_perf.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", type=_positive_float,
                        help="upper bound of memory for the scheduler (GB)")
    g_perf.add_argument("--use-plugin", "--use_plugin", type=Path, metavar="FILE",
                        help="a YAML file with the Nipype plugin and plugin_args")


def _add_workflow_options(parser: argparse.ArgumentParser) -> None:
    """Parameters of the participant-level processing."""
    g_wf = parser.add_argument_group("Workflow configuration")
    g_wf.add_argument("--detector", choices=DETECTORS, default="cmbprep",
                      help="microbleed detector: 'cmbprep' (default) or 'bian2013' "
                      "(the semi-automated method of Bian et al. 2013)")
    g_wf.add_argument("--detector-model", type=Path, metavar="FILE",
                      help="classifier of the 'cmbprep' detector (a JSON file written by "
                      "cmbprep.testing.detector_training); default: the packaged model")
    g_wf.add_argument("--swi-power", type=int, default=4,
                      help="exponent n of the negative phase mask in SWI = mag x mask^n "
                      "(the default detector's classifier learned from n = 4)")
    g_wf.add_argument("--highpass-mm", type=_positive_float, default=12.0,
                      help="homodyne high-pass filter kernel size (mm)")
    g_wf.add_argument("--minip-slab-mm", type=_positive_float, default=8.0,
                      help="minimum-intensity projection slab thickness (mm)")
    g_wf.add_argument("--phase-handedness", dest="handedness",
                      choices=HANDEDNESS, default="auto",
                      help="phase sign convention of the scanner; 'auto' detects it "
                      "from the data (veins must be dark): in the head mask first, then "
                      "again inside the brain after brain extraction, which decides")
    g_wf.add_argument("--megre-echoes", choices=MEGRE_ECHOES, default="longest",
                      help="multi-echo GRE with phase: SWI of the echo with the longest "
                      "echo time alone ('longest', default: the classifier learned from "
                      "it) or of the RSS magnitude and the phase fitted over all echoes "
                      "('fit')")
    g_wf.add_argument("--registration-resolution", dest="registration_resolution_mm",
                      type=_positive_float, default=2.0,
                      help="voxel size of the grid on which template registration "
                      "runs (mm)")


def _add_group_options(parser: argparse.ArgumentParser) -> None:
    """Options of the group level."""
    g_group = parser.add_argument_group("Group level")
    g_group.add_argument("--covariates", dest="covariates_file", type=Path,
                         metavar="FILE",
                         help="TSV of covariates (default: participants.tsv of bids_dir)")
    g_group.add_argument("--group-column", default="group",
                         help="column of the covariates telling patients from controls")
    g_group.add_argument("--prevalence-by", action="append", default=[],
                         metavar="COLUMN:EDGES",
                         help="prevalence by bins of a covariate, e.g. "
                         "platelet_nadir:0,5,10,15 (repeatable)")
    g_group.add_argument("--model", metavar="FORMULA",
                         help="right-hand side of the multivariate Poisson model, e.g. "
                         "'age + C(sex) + platelet_nadir'")
    g_group.add_argument("--rater", metavar="NAME",
                         help="count this rater's reviews (cmbprep-review); default: a "
                         "participant's only rater, or the first by name")
    g_group.add_argument("--covariate-selection", choices=COVARIATE_SELECTIONS,
                         default="prespecified",
                         help="covariates of the multivariate model without --model: "
                         "'prespecified' (age + sex + the group column) or "
                         "'univariate-p' (P < 0.05 in a univariate model, plus age and "
                         "sex: the ITP study's selection, which inflates type I error)")
    g_group.add_argument("--keep-failed-qc", action="store_true",
                         help="analyse units whose registration failed QC "
                         "(registration_ok false; left out by default)")
    g_group.add_argument("--reviewed-only", action="store_true",
                         help="analyse only units counted from a rater's review")


def _add_other_options(parser: argparse.ArgumentParser) -> None:
    """Work folder, settings file, seed and debugging."""
    g_other = parser.add_argument_group("Other options")
    g_other.add_argument("-w", "--work-dir", "--work_dir", dest="work_dir", type=Path,
                         help="folder for intermediate results (default: ./work)")
    g_other.add_argument("--config-file", "--config_file", type=Path, metavar="FILE",
                         help="a TOML file with settings (as written in the work dir); "
                         "flags given on the command line win")
    g_other.add_argument("--random-seed", type=_random_seed, default=42,
                         help="seed for every random step (registration, detection)")
    g_other.add_argument("--write-graph", action="store_true",
                         help="write the workflow graph (graph.svg) in the work dir")
    g_other.add_argument("--stop-on-first-crash", action="store_true",
                         help="stop at the first failing node")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (also used by the docs and by the Boutiques test)."""
    parser = _Parser(
        prog="cmbprep",
        description="cmbprep: find cerebral microbleeds on susceptibility-weighted MRI "
        "(a BIDS-App).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="the output folder (a BIDS-Derivatives dataset)")
    parser.add_argument("analysis_level",
                        help="processing stage: 'participant' or 'group'")
    parser.add_argument("--version", action="version", version=f"cmbprep v{__version__}")
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0,
                        help="increase log verbosity (-v, -vv)")

    _add_bids_options(parser)
    _add_performance_options(parser)
    _add_workflow_options(parser)
    _add_group_options(parser)
    _add_other_options(parser)
    return parser


def parse_args(argv=None) -> Settings:
    """Parse the command line into :class:`~cmbprep.config.Settings`.

    Raises
    ------
    UsageError
        Bad arguments (exit 64).
    AnalysisLevelError
        An analysis level other than ``participant`` or ``group`` (exit 17).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {
        action.dest
        for action in parser._actions
        if action.option_strings
        and any(opt in argv or any(a.startswith(opt + "=") for a in argv)
                for opt in action.option_strings)
    }
    if args.analysis_level not in ANALYSIS_LEVELS:
        raise AnalysisLevelError(
            f"unknown analysis level '{args.analysis_level}': "
            f"choose one of {', '.join(ANALYSIS_LEVELS)}")

    settings = Settings()
    if args.config_file is not None:
        settings.update_from_toml(args.config_file)
    values = vars(args)
    for name, value in values.items():
        if name == "config_file" or not hasattr(settings, name):
            continue
        # With a config file, only flags actually given override it.
        if args.config_file is not None and name not in given and name not in (
                "bids_dir", "output_dir", "analysis_level"):
            continue
        if value is None:
            continue
        setattr(settings, name, value)
    settings.bids_dir = settings.bids_dir.absolute()
    settings.output_dir = settings.output_dir.absolute()
    if settings.work_dir is None:
        settings.work_dir = Path("work")
    settings.work_dir = settings.work_dir.absolute()
    return settings
