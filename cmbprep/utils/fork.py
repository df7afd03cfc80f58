"""Run a function in a forked child process (second core, same result)."""

from __future__ import annotations

import os

__all__ = ["run_in_fork"]


def run_in_fork(function, args, timeout_s=600.0):
    """Run ``function(*args)`` in a forked child; return a function that waits for the
    (pickled) result, or gives None if the child failed or there is no ``os.fork``.

    Used to overlap work that holds the GIL (ANTs, scipy.ndimage) with the caller's own
    work on a second core. The caller must compute the same thing itself when the
    result is None, so the output never depends on whether the fork worked.
    """
    import pickle
    import select

    if not hasattr(os, "fork"):
        return None
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # child: compute, send, leave without running the parent's cleanup
        status = 1
        try:
            os.close(read_fd)
            data = pickle.dumps(function(*args), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)

    def result():
        chunks = []
        try:
            while True:
                ready, _, _ = select.select([read_fd], [], [], timeout_s)
                if not ready:  # hung child: give up on it
                    os.kill(pid, 9)
                    chunks = []
                    break
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            _, status = os.waitpid(pid, 0)
        if status != 0 or not chunks:
            return None
        return pickle.loads(b"".join(chunks))

    return result
