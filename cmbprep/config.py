"""One settings object for a cmbprep run, saved as TOML in the work directory.

The command line (:mod:`cmbprep.cli.parser`) fills a :class:`Settings`; the run writes
it to ``<work_dir>/cmbprep-<run_uuid>/config.toml`` so that a run can be inspected and
reproduced, and ``--config-file`` reads one back (command-line flags win).
"""

from __future__ import annotations

import dataclasses
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
                "covariates_file", "bids_database_dir"}


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
    swi_power: int = 4  # exponent of the negative phase mask
    highpass_mm: float = 12.0  # homodyne high-pass kernel width (mm)
    minip_slab_mm: float = 8.0  # minimum-intensity projection slab thickness (mm)
    handedness: str = "auto"  # phase sign convention: auto, right or left
    registration_resolution_mm: float = 2.0  # grid on which registration runs (mm)

    # Group level
    covariates_file: Path | None = None
    group_column: str = "group"
    prevalence_by: list[str] = field(default_factory=list)
    model: str | None = None

    # Bookkeeping
    version: str = __version__
    run_uuid: str = ""
    bids_database_dir: Path | None = None

    def resolved_nprocs(self) -> int:
        """Number of processes to use (``--nprocs``, else all cores)."""
        return self.nprocs if self.nprocs > 0 else (os.cpu_count() or 1)

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
            if key in _PATH_FIELDS and value is not None:
                value = Path(value)
            setattr(self, key, value)
        return self
