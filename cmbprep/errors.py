"""Exceptions that carry the exit code the command line returns.

The exit codes follow the draft BIDS execution specification (see
``docs/usage.rst``). Library code raises these; ``cmbprep.cli.run`` turns them into a
one-line message and the exit code. Messages must name the offending file (or
participant, column...) and say what is wrong.
"""

from __future__ import annotations


class CmbprepError(Exception):
    """Base class; ``exit_code`` is what the command line returns."""

    exit_code = 1


class BIDSValidationError(CmbprepError):
    """The input dataset fails BIDS validation (exit 16)."""

    exit_code = 16


class AnalysisLevelError(CmbprepError):
    """Unknown analysis level (exit 17)."""

    exit_code = 17


class SelectionError(CmbprepError):
    """Participant labels or BIDS filters selected nothing (exit 18)."""

    exit_code = 18


class UsageError(CmbprepError):
    """Any other usage error (exit 64)."""

    exit_code = 64


class DataError(CmbprepError):
    """Unreadable or inconsistent data (exit 65)."""

    exit_code = 65


class InputMissingError(CmbprepError):
    """``bids_dir`` missing, or a participant without usable SWI input (exit 66)."""

    exit_code = 66


class OutputError(CmbprepError):
    """The output cannot be created (exit 73)."""

    exit_code = 73


class IOFailure(CmbprepError):
    """An input/output error while running (exit 74)."""

    exit_code = 74


class PartialFailure(CmbprepError):
    """Some participant units failed or were skipped, the others were written (exit 19)."""

    exit_code = 19


class WorkerLostError(CmbprepError):
    """A worker process died (killed, most often by the out-of-memory killer) (exit 71)."""

    exit_code = 71


class NoSpaceError(IOFailure):
    """No space left on the device of the work or output folder (exit 74)."""

    exit_code = 74


class BusyError(CmbprepError):
    """Another cmbprep run is writing the same participant, or the group files, into the
    same output folder (exit 75: try again later)."""

    exit_code = 75


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """SIGTERM or SIGINT received: the run stops its workers and exits 128 + signal
    (143 for SIGTERM, 130 for SIGINT). A ``BaseException`` so that no ``except
    Exception`` of a node or of Nipype can swallow it."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")
