"""Atomic file writing: a temporary file in the target folder, then :func:`os.replace`.

A reader (or a crash) never sees a half-written output: either the old file or the new
one is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def python_sources_fingerprint(directory: str | Path) -> str:
    """SHA-256 prefix (16 hex digits) of the ``.py`` files of a folder: name and content
    of each, sorted by name. A cache key that changes when any module changes."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.py")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of written files: those of an ordinary ``open()`` under the process umask
#: (``mkstemp`` alone would leave them readable by the owner only).
FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, FILE_MODE)
        write(fd, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    def write(fd, _tmp):
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return _atomic(path, write)


def write_json_atomic(path: str | Path, content: dict) -> Path:
    """Write ``content`` as indented, key-sorted JSON atomically."""
    return write_text_atomic(path, json.dumps(content, indent=2, sort_keys=True,
                                              default=str) + "\n")


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    def write(fd, tmp):
        os.close(fd)
        shutil.copyfile(src, tmp)

    return _atomic(dst, write)


#: Hidden folder of the output dataset holding the locks and the staging folders.
STATE_FOLDER = ".cmbprep"


def _lock_holder(path: Path) -> str:
    try:
        return Path(path).read_text().strip() or "another run"
    except OSError:
        return "another run"


@contextlib.contextmanager
def participant_locks(output_dir: str | Path, subjects):
    """Hold an exclusive lock per participant on ``output_dir`` for the whole run.

    A second run (another job, another node of a cluster sharing the folder) that wants
    one of these participants refuses at once with :class:`~cmbprep.errors.BusyError`
    (exit 75) instead of writing the same files. Locks are ``flock`` locks (``fcntl``
    byte-range locks on NFS), released when the process ends, even when it is killed.
    """
    with _output_locks(output_dir, {
            f"sub-{subject}": f"sub-{subject}: another cmbprep run is writing this "
                              f"participant into {output_dir}" for subject in subjects
    }) as held:
        yield held


@contextlib.contextmanager
def group_lock(output_dir: str | Path):
    """Hold the lock of the group level's files (``group_*``) of ``output_dir``.

    A second group run on the same output folder refuses at once with
    :class:`~cmbprep.errors.BusyError` (exit 75), the same lock mechanism as
    :func:`participant_locks`: two group runs never write their files side by side.
    """
    with _output_locks(output_dir, {
            "group": f"{output_dir}: another cmbprep group run is writing the group "
                     "files of this output folder"}) as held:
        yield held


@contextlib.contextmanager
def _output_locks(output_dir: str | Path, names: dict):
    """Hold ``.cmbprep/locks/<name>.lock`` for each ``{name: message}`` (in order); the
    message (plus who holds the lock) is the :class:`~cmbprep.errors.BusyError` raised
    when another process holds one. The lock files, and the folders when empty, are
    removed on exit."""
    import fcntl
    import socket

    from ..errors import BusyError

    folder = Path(output_dir) / STATE_FOLDER / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    held = []
    try:
        for name, message in names.items():
            path = folder / f"{name}.lock"
            while True:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
                except FileNotFoundError:  # another run just removed the empty folder
                    folder.mkdir(parents=True, exist_ok=True)
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise BusyError(
                        f"{message} ({_lock_holder(path)}); wait for it to end "
                        "or use another output folder") from None
                try:  # the file may have been removed by the run that held it
                    if os.fstat(fd).st_ino == os.stat(path).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            held.append((path, fd))
        yield [path for path, _ in held]
    finally:
        for path, fd in reversed(held):
            with contextlib.suppress(OSError):
                path.unlink()  # before unlocking: a waiting run then retries
            os.close(fd)
        for empty in (folder, folder.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()


def _copy_h5_group(src, dst) -> None:
    import h5py

    for key, value in dict(src.attrs).items():
        dst.attrs[key] = value
    for name in src:  # sorted by name
        obj = src[name]
        if isinstance(obj, h5py.Group):
            _copy_h5_group(obj, dst.create_group(name))
            continue
        kwargs = {}
        if obj.chunks:
            kwargs.update(chunks=obj.chunks, compression=obj.compression,
                          compression_opts=obj.compression_opts, shuffle=obj.shuffle)
        new = dst.create_dataset(name, shape=obj.shape, dtype=obj.dtype, data=obj[()],
                                 track_times=False, **kwargs)
        for key, value in dict(obj.attrs).items():
            new.attrs[key] = value


def copy_h5_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy an HDF5 file (e.g. an ANTs/ITK composite transform) atomically, without the
    creation times HDF5 records by default: the same content gives the same bytes."""
    import h5py

    def write(fd, tmp):
        os.close(fd)
        with h5py.File(src, "r") as fin, h5py.File(tmp, "w", libver="earliest") as fout:
            _copy_h5_group(fin, fout)

    return _atomic(dst, write)
