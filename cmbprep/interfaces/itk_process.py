"""Run an ITK/ANTs computation in a new process with a known number of ITK threads.

ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, the first time a
multi-threaded filter runs, and keeps that number for the life of the process. Nipype's
MultiProc workers run many nodes one after the other, so the thread count an ANTs call
gets would otherwise depend on which node happened to use ITK first in that worker. Some
results depend on it: the mutual-information metric of the template registration is only
reproducible with one thread, and N4's field differs in the last bits between one and
two threads. Nodes whose result depends on it run that computation through
:func:`run_with_itk_threads`: a *spawned* (not forked) child process, whose environment
sets the thread count before ITK starts, runs the function and sends back its result.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

__all__ = ["run_with_itk_threads"]


def _set_itk_threads(n_threads: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n_threads)


def run_with_itk_threads(function, n_threads: int, /, *args, **kwargs):
    """Return ``function(*args, **kwargs)``, computed in a new process with ``n_threads``
    ITK threads.

    ``function`` must be importable (a module-level function), and its arguments and
    result picklable. An exception raised by ``function`` is raised here; a child that
    dies (a crash in native code) raises
    :class:`concurrent.futures.process.BrokenProcessPool`.
    """
    n_threads = max(1, int(n_threads))
    context = multiprocessing.get_context("spawn")
    with _main_not_reimported(), ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_set_itk_threads,
            initargs=(n_threads,)) as pool:
        future = pool.submit(function, *args, **kwargs)
    return future.result()


@contextlib.contextmanager
def _main_not_reimported():
    """Spawned children re-run the ``__main__`` script unless it is an imported module.
    Nipype's batch plugins (SLURM, SGE, PBS) run each node as an unguarded script, which
    would run the node again in the child: hide the script's path while the child
    starts (``function`` is importable on its own)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(getattr(main, "__spec__", None), "name", None):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path
