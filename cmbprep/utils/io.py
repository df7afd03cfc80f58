"""Atomic file writing: a temporary file in the target folder, then :func:`os.replace`.

A reader (or a crash) never sees a half-written output: either the old file or the new
one is there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


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
