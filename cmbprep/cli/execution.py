"""Running the participant graph so that it cannot hang or leave orphans.

Nipype's ``MultiProc`` plugin runs nodes in a :class:`concurrent.futures.ProcessPoolExecutor`
and collects results in a done-callback that calls ``future.result()``. When a worker
dies (the kernel's out-of-memory killer sends SIGKILL), every pending future fails with
``BrokenProcessPool``; the callback raises, no result is ever stored, and the plugin's
polling loop waits for those results for ever. Any other exception raised by a future
(e.g. ``FileNotFoundError`` when a node's result file cannot be written on a full disk)
hangs the loop the same way.

:class:`CmbprepMultiProcPlugin` subclasses the plugin rather than watching it from a
second thread: the plugin's own loop is the only place that knows which nodes are
pending, and a watchdog thread cannot stop the main thread's loop without killing the
process from outside. The subclass

* stores every failed future as a failed node (crash file, dependants not run);
* turns a broken pool or a full disk into :class:`~cmbprep.errors.WorkerLostError`
  (exit 71) / :class:`~cmbprep.errors.NoSpaceError` (exit 74), raised from the plugin's
  loop within one polling period (2 s);
* starts each worker in its own process group, with the parent-death signal set to
  SIGKILL (Linux), so that stopping a worker stops whatever it started (ANTs children),
  and a main process killed outright takes its workers with it;
* stops every worker (SIGTERM to each process group, SIGKILL after 5 s) whenever the run
  ends with an exception, including :class:`~cmbprep.errors.Interrupted`.

:func:`stop_on_signals` turns SIGTERM and SIGINT into :class:`~cmbprep.errors.Interrupted`
in the main thread (exit 143 / 130). :class:`Progress` prints one line per finished
stage of a participant unit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from traceback import format_exception

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, run_node

from ..errors import Interrupted, NoSpaceError, WorkerLostError

#: Seconds a worker gets to exit after SIGTERM before SIGKILL.
TERMINATE_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1
_ENOSPC_RE = re.compile(r"\[Errno 28\] No space left on device(?:: '([^']*)')?")


def say(line: str) -> None:
    """One progress line on standard output."""
    print(line, file=sys.stdout, flush=True)


def format_duration(seconds: float) -> str:
    """``41 s``, ``2 min 13 s`` or ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# -- processes --------------------------------------------------------------------------

def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _worker_init(cwd: str, parent_pid: int) -> None:
    """Start of every worker: its own process group, default signal actions, and death
    with the parent."""
    os.chdir(cwd)
    os.environ["NIPYPE_NO_ET"] = "1"
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def signal_process_tree(pid: int, signum: int, group: bool | None = None) -> None:
    """Send ``signum`` to the process group led by ``pid`` (``group`` True: the pool's
    workers, each its own group, even when the leader itself is gone), or to ``pid``
    alone (``group`` False; ``None``: the group when ``pid`` leads one). A process or
    group that is gone is ignored."""
    try:
        if group is None:
            group = os.getpgid(pid) == pid and pid != os.getpgid(0)
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_processes(processes, grace_s: float = TERMINATE_GRACE_S,
                   groups: bool | None = None) -> list[int]:
    """SIGTERM each process (and its group), SIGKILL what is left after ``grace_s``;
    return the pids that were still running. With ``groups`` True the group of a
    process that already died is stopped too (what a killed worker left running)."""
    processes = list(processes)
    alive = [p for p in processes if p.is_alive()]
    for proc in processes:
        if proc in alive or groups:
            signal_process_tree(proc.pid, signal.SIGTERM, groups)
    deadline = time.monotonic() + grace_s
    for proc in alive:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive() or groups:
            signal_process_tree(proc.pid, signal.SIGKILL, groups)
            proc.join(timeout=2.0)
    return [p.pid for p in alive]


def stop_all_children(grace_s: float = TERMINATE_GRACE_S) -> list[int]:
    """Stop every child process started with :mod:`multiprocessing` (pool workers and
    the spawned ITK processes of the serial plugin)."""
    return stop_processes(mp.active_children(), grace_s)


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGTERM and SIGINT stop the children and raise
    :class:`~cmbprep.errors.Interrupted` in the main thread (a second signal while
    stopping is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, _frame):
        if fired:
            return
        fired.append(signum)
        for proc in mp.active_children():
            signal_process_tree(proc.pid, signal.SIGTERM)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def enospc_message(text: str, where: str = "") -> str | None:
    """The one-line message for a traceback (or error text) that ran out of disk space,
    else ``None``."""
    match = _ENOSPC_RE.search(text)
    if not match:
        return None
    path = match.group(1) or where or "the work or output folder"
    return (f"{path}: no space left on device; free space there (or give -w/--work-dir "
            "a folder on a larger disk), then rerun with the same -w to resume")


# -- the plugin -------------------------------------------------------------------------

class CmbprepMultiProcPlugin(MultiProcPlugin):
    """Nipype's MultiProc plugin that cannot hang (see the module docstring)."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # the plain pool: no worker has started yet
        context = mp.get_context(self.plugin_args.get("mp_context"))
        self.pool = ProcessPoolExecutor(max_workers=self.processors,
                                        initializer=_worker_init,
                                        initargs=(self._cwd, os.getpid()),
                                        mp_context=context)
        self._workers = {}  # pid -> multiprocessing.Process, every worker ever started
        self._names = {}  # taskid -> node name
        self._fatal = None  # ("worker" | "enospc", detail) once the run cannot go on

    # results ------------------------------------------------------------------
    def _submit_job(self, node, updatehash=False):
        self._raise_if_fatal()
        self._taskid += 1
        taskid = self._taskid
        if getattr(node.interface, "terminal_output", "") == "stream":
            node.interface.terminal_output = "allatonce"
        try:
            future = self.pool.submit(run_node, node, updatehash, taskid)
        except BrokenProcessPool:
            self._fatal = self._fatal or ("worker", None)
            self._raise_if_fatal()
        self._names[taskid] = node.fullname
        self._task_obj[taskid] = future
        self._workers.update(getattr(self.pool, "_processes", None) or {})
        future.add_done_callback(partial(self._future_done, taskid))
        return taskid

    def _future_done(self, taskid, future):
        """Runs in the executor's thread: store a result, never raise."""
        try:
            result = future.result()
        except BrokenProcessPool:
            if self._fatal is None:
                self._fatal = ("worker", taskid)
            return
        except BaseException:  # noqa: BLE001 - any failure becomes a failed node
            result = {"result": None, "taskid": taskid,
                      "traceback": format_exception(*sys.exc_info())}
        if result.get("traceback") and self._fatal is None:
            message = enospc_message("".join(result["traceback"]))
            if message:
                self._fatal = ("enospc", message)
        self._taskresult[taskid] = result

    def _async_callback(self, args):  # not used: _future_done replaces it
        raise NotImplementedError

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        self._raise_if_fatal()
        super()._send_procs_to_workers(updatehash=updatehash, graph=graph)

    def _raise_if_fatal(self):
        if self._fatal is None:
            return
        kind, detail = self._fatal
        if kind == "enospc":
            raise NoSpaceError(detail)
        raise WorkerLostError(self._worker_message())

    def _worker_message(self) -> str:
        running = sorted({self._names[t] for t, _ in self.pending_tasks
                          if t in self._names})
        dead = []
        for pid, proc in sorted(self._workers.items()):
            code = proc.exitcode
            if code is not None and code < 0:
                dead.append(f"pid {pid} killed by {signal.Signals(-code).name}")
            elif code not in (None, 0):
                dead.append(f"pid {pid} exited with code {code}")
        who = "; ".join(dead) or "a worker process died"
        where = (f" while running {', '.join(_short(n) for n in running[:4])}"
                 f"{' ...' if len(running) > 4 else ''}") if running else ""
        return (f"worker process lost ({who}){where}; probably out of memory: lower "
                "--nprocs or raise --mem-gb (and the job's memory limit), then rerun "
                "with the same -w to resume")

    # ending -------------------------------------------------------------------
    def run(self, graph, config, updatehash=False):
        try:
            return super().run(graph, config, updatehash=updatehash)
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> list[int]:
        """Stop every worker (and its process group); return the pids still running."""
        processes = dict(self._workers)
        processes.update(getattr(self.pool, "_processes", None) or {})
        stopped = stop_processes(list(processes.values()), groups=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        return stopped


def _short(fullname: str) -> str:
    """``sub-01 anat_wf.registration`` from a node's full name."""
    unit, stage, node = split_node_name(fullname)
    return " ".join(x for x in (unit, f"{stage}.{node}" if stage else node) if x)


_UNIT_RE = re.compile(r"^single_subject_(.+)_wf$")


def split_node_name(fullname: str) -> tuple[str | None, str | None, str]:
    """(unit, stage workflow, node) of a node's full name, e.g.
    ``cmbprep_0_1_wf.single_subject_01_ses_1_wf.anat_wf.registration`` ->
    ``("sub-01_ses_1", "anat_wf", "registration")`` (the unit as the node name spells it)."""
    parts = fullname.split(".")
    for index, part in enumerate(parts):
        match = _UNIT_RE.match(part)
        if match:
            rest = parts[index + 1:]
            stage = rest[0] if len(rest) > 1 else None
            return f"sub-{match.group(1)}", stage, rest[-1] if rest else part
    return None, None, parts[-1]


# -- progress ---------------------------------------------------------------------------

STAGE_NAMES = {None: "inputs", "swi_wf": "SWI", "anat_wf": "anatomy",
               "detection_wf": "detection", "outputs_wf": "outputs"}


class Progress:
    """One line per finished stage of a participant unit, as a Nipype status callback.

    ``[3/8] sub-05 detection done (41 s; 2 min 13 s since start)``; a failing node prints
    ``[!] sub-02 SWI failed in swi_wf.filter_phase``.
    """

    def __init__(self, node_names, unit_names=None, clock=time.monotonic):
        self.clock = clock
        self.start = clock()
        self.unit_names = dict(unit_names or {})
        self.pending = {}  # (unit, stage) -> set of node full names
        for name in node_names:
            unit, stage, _ = split_node_name(name)
            if unit is None:
                continue
            self.pending.setdefault((unit, stage), set()).add(name)
        self.total = len(self.pending)
        self.done = 0
        self.started = {}
        self.first_end = {}
        self.failed = {}  # unit -> node full name

    @classmethod
    def from_workflow(cls, workflow, unit_names=None):
        from nipype.pipeline.engine.utils import generate_expanded_graph

        # the nodes Nipype will run: identity nodes removed, as in Workflow.run
        graph = generate_expanded_graph(workflow._create_flat_graph())
        return cls([node.fullname for node in graph.nodes()], unit_names)

    def _unit(self, unit):
        return self.unit_names.get(unit, unit)

    def __call__(self, node, status):
        name = node.fullname
        unit, stage, _ = split_node_name(name)
        key = (unit, stage)
        if key not in self.pending:
            return
        now = self.clock()
        if status == "start":
            self.started.setdefault(key, now)
        elif status == "exception":
            if unit not in self.failed:
                self.failed[unit] = name
                say(f"[!] {self._unit(unit)} {STAGE_NAMES.get(stage, stage)} failed in "
                    f"{_short(name).split(' ', 1)[-1]}")
        elif status == "end":
            nodes = self.pending[key]
            if name not in nodes:
                return
            self.first_end.setdefault(key, now)
            nodes.discard(name)
            if not nodes:
                self.done += 1
                began = self.started.get(key, self.first_end.get(key, now))
                took = format_duration(now - began)
                say(f"[{self.done}/{self.total}] {self._unit(unit)} "
                    f"{STAGE_NAMES.get(stage, stage)} done ({took}; "
                    f"{format_duration(now - self.start)} since start)")

    def completed_units(self) -> set:
        """Units (as their node names spell them) whose every stage finished."""
        units = {unit for unit, _ in self.pending}
        return {u for u in units
                if all(not nodes for (x, _), nodes in self.pending.items() if x == u)}


# -- warnings ---------------------------------------------------------------------------

def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` replacement: one line, no source line."""
    text = " ".join(str(message).split())
    stream = file or sys.stderr
    with contextlib.suppress(OSError, ValueError):
        stream.write(f"cmbprep: warning: {text} ({category.__name__}, "
                     f"{Path(filename).name}:{lineno})\n")


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
