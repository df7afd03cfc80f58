"""One settings object for a cmbprep run, saved as TOML in the work directory.

The command line (:mod:`cmbprep.cli.parser`) fills a :class:`Settings`; the run writes
it to ``<work_dir>/cmbprep-<run_uuid>/config.toml`` so that a run can be inspected and
reproduced, and ``--config-file`` reads one back (command-line flags win).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from . import __version__
from .errors import UsageError
from .utils.io import write_text_atomic

#: Settings that hold paths (converted to/from strings for TOML).
_PATH_FIELDS = {"bids_dir", "output_dir", "work_dir", "bids_filter_file", "use_plugin",
                "covariates_file", "bids_database_dir", "detector_model"}


def _quota_cpus(quota: str, period: str) -> int | None:
    if quota in ("max", "-1"):
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _cgroup_cpu_limit(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """CPUs allowed by the cgroup CPU quota, or None without a quota.

    cgroup v2: ``cpu.max`` of this process's cgroup (from ``/proc/self/cgroup``) and of
    each of its ancestors; cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of
    its ``cpu`` cgroup.
    """
    limits = []
    try:
        entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    except OSError:
        entries = []
    v2 = [path for _, controllers, path in entries if controllers == ""]
    v1 = [path for _, controllers, path in entries if "cpu" in controllers.split(",")]
    if v2:
        folder = cgroup_root / v2[0].strip().lstrip("/")
        for candidate in [folder, *folder.parents]:
            try:
                limit = _quota_cpus(*(candidate / "cpu.max").read_text().split()[:2])
            except (OSError, ValueError, TypeError):
                limit = None
            if limit is not None:
                limits.append(limit)
            if candidate == cgroup_root:
                break
    folder = cgroup_root / "cpu" / (v1[0].strip().lstrip("/") if v1 else "")
    try:
        limit = _quota_cpus((folder / "cpu.cfs_quota_us").read_text().strip(),
                            (folder / "cpu.cfs_period_us").read_text().strip())
        if limit is not None:
            limits.append(limit)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def available_cpus(environ=None, cgroup_root: str | Path = "/sys/fs/cgroup",
                   proc_cgroup: str | Path = "/proc/self/cgroup") -> int:
    """CPUs this run may use: the smallest of the process's CPU affinity, the cgroup CPU
    quota (containers, SLURM with cgroups) and ``SLURM_CPUS_PER_TASK``.

    A 1-CPU array task on a 64-core node gets 1, not 64.
    """
    environ = os.environ if environ is None else environ
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else (os.cpu_count() or 1)]
    quota = _cgroup_cpu_limit(Path(cgroup_root), Path(proc_cgroup))
    if quota is not None:
        limits.append(quota)
    try:
        slurm = int(environ.get("SLURM_CPUS_PER_TASK", ""))
        if slurm > 0:
            limits.append(slurm)
    except ValueError:
        pass
    return max(1, min(limits))


#: Ways the group level chooses the covariates of the multivariate model
#: (``--covariate-selection``; :mod:`cmbprep.group.models`).
COVARIATE_SELECTIONS = ("prespecified", "univariate-p")

#: How multi-echo GRE with phase becomes one SWI (``--megre-echoes``); the same choices
#: as :data:`cmbprep.algorithms.swi.MEGRE_ECHOES`, kept here so that the parser does not
#: import the SWI chain.
MEGRE_ECHOES = ("longest", "fit")

#: Phase sign conventions (``--phase-handedness``; :mod:`cmbprep.algorithms.swi`).
HANDEDNESS = ("auto", "right", "left")

#: Settings that take one of a few values: a config file is checked against them as the
#: command line is (argparse ``choices``).
_CHOICES = {"megre_echoes": MEGRE_ECHOES, "handedness": HANDEDNESS,
            "covariate_selection": COVARIATE_SELECTIONS}


@dataclass
class Settings:
    """Every setting of a run. Units are given in each field's comment."""

    # Positional BIDS-App arguments
    bids_dir: Path | None = None
    output_dir: Path | None = None
    analysis_level: str = "participant"

    # Selection
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False

    # Performance and execution
    work_dir: Path | None = None
    nprocs: int = 0  # 0 means all available cores
    omp_nthreads: int = 0  # 0 means min(nprocs, 8)
    mem_gb: float = 0.0  # 0 means no limit given
    use_plugin: Path | None = None
    stop_on_first_crash: bool = False
    write_graph: bool = False
    random_seed: int = 42
    verbosity: int = 0

    # Processing options
    detector: str = "cmbprep"
    detector_model: Path | None = None  # classifier JSON; None: the packaged model
    swi_power: int = 4  # exponent of the negative phase mask
    highpass_mm: float = 12.0  # homodyne high-pass kernel width (mm)
    minip_slab_mm: float = 8.0  # minimum-intensity projection slab thickness (mm)
    handedness: str = "auto"  # phase sign convention: auto, right or left
    megre_echoes: str = "longest"  # multi-echo GRE with phase: longest echo alone, or fit
    registration_resolution_mm: float = 2.0  # grid on which registration runs (mm)

    # Group level
    covariates_file: Path | None = None
    group_column: str = "group"
    prevalence_by: list[str] = field(default_factory=list)
    model: str | None = None
    rater: str | None = None  # whose review the group level counts (--rater)
    covariate_selection: str = "prespecified"  # or "univariate-p" (the ITP study's)
    keep_failed_qc: bool = False  # analyse units whose registration failed QC
    reviewed_only: bool = False  # analyse only units counted from a rater's review

    # Bookkeeping
    version: str = __version__
    run_uuid: str = ""
    bids_database_dir: Path | None = None

    def resolved_nprocs(self) -> int:
        """Number of processes to use (``--nprocs``, else :func:`available_cpus`)."""
        return self.nprocs if self.nprocs > 0 else available_cpus()

    def resolved_omp_nthreads(self) -> int:
        """Threads per process (``--omp-nthreads``, else min(nprocs, 8))."""
        if self.omp_nthreads > 0:
            return min(self.omp_nthreads, self.resolved_nprocs())
        return min(self.resolved_nprocs(), 8)

    def to_dict(self) -> dict:
        """A TOML-safe dictionary (paths as strings, ``None`` dropped)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    def to_toml(self, path: Path) -> Path:
        """Write the settings as TOML (atomically) and return the path."""
        return write_text_atomic(path, tomli_w.dumps({"cmbprep": self.to_dict()}))

    @classmethod
    def from_toml(cls, path: Path) -> "Settings":
        """Read settings written by :meth:`to_toml` (or by hand)."""
        return cls().update_from_toml(path)

    def update_from_toml(self, path: Path) -> "Settings":
        """Overwrite fields with those found in a TOML file (``[cmbprep]`` table)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path}: cannot read config file ({exc})") from exc
        data = data.get("cmbprep", data)
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        for key, value in data.items():
            if key in _CHOICES and value not in _CHOICES[key]:
                raise UsageError(f"{path}: {key} must be one of "
                                 f"{', '.join(_CHOICES[key])}, got {value!r}")
        for key, value in data.items():
            if key in _PATH_FIELDS and value is not None:
                value = Path(value)
            setattr(self, key, value)
        return self
