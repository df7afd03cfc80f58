"""Compare two ``make demo``-style output folders file by file (a refactoring check).

Every file under ``bids/`` and ``derivatives/`` of A and B is compared by SHA-256. The
files that differ between two runs of the *same* code are then compared by their data:

* ANTs transforms (``*_xfm.h5``): HDF5 files embed creation times, so their datasets
  are compared (needs ``h5py``, in the ``test`` extra);
* JSON sidecars: equal once every ``duration_s`` entry (wall-clock timings) is removed;
* ``logs/config-<run_uuid>.toml``: equal but for the ``run_uuid`` line.

Usage (the steps of ``make demo``, with the old code first, then the new; both folders
must be written at the same path, because sidecars and the dataset description record
it)::

    git worktree add /tmp/old OLD_COMMIT
    cp cmbprep/data/atlas/tpl-* /tmp/old/cmbprep/data/atlas/   # the built atlas
    export PYTHONPATH=/tmp/old                                  # old code first
    .venv/bin/python -m cmbprep.testing.phantom /tmp/demo/bids --example
    .venv/bin/cmbprep /tmp/demo/bids /tmp/demo/derivatives participant -w /tmp/demo/work
    .venv/bin/cmbprep /tmp/demo/bids /tmp/demo/derivatives group
    mv /tmp/demo /tmp/demo-old; unset PYTHONPATH                # then the same again
    python -m cmbprep.testing.compare_derivatives /tmp/demo-old /tmp/demo
Exit 0 when every file is equal (bytes, or data for the files above), 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, Path]:
    found = {}
    for top in ("bids", "derivatives"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = path
    return found


def _h5_datasets(path: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                          if isinstance(obj, h5py.Dataset) else None)
    return out


def _without_durations(value):
    if isinstance(value, dict):
        return {k: _without_durations(v) for k, v in value.items() if k != "duration_s"}
    if isinstance(value, list):
        return [_without_durations(v) for v in value]
    return value


def _same_data(a: Path, b: Path) -> bool:
    """Equality of two files that legitimately differ in bytes between runs."""
    if a.suffix == ".h5":
        da, db = _h5_datasets(a), _h5_datasets(b)
        return da.keys() == db.keys() and all(
            np.array_equal(np.asarray(da[k]), np.asarray(db[k])) for k in da)
    if a.suffix == ".json":
        return _without_durations(json.loads(a.read_text())) == _without_durations(
            json.loads(b.read_text()))
    if a.suffix == ".toml":
        def strip(p):
            return [line for line in p.read_text().splitlines()
                    if not line.startswith("run_uuid")]
        return strip(a) == strip(b)
    return False


def _config_key(rel: str) -> str:
    """``logs/config-<run_uuid>.toml`` has a new name each run."""
    name = Path(rel).name
    return str(Path(rel).parent / "config.toml") if name.startswith("config-") else rel


def compare(old: Path, new: Path) -> int:
    """Print one line per file that differs; return the number of real differences."""
    files_a = {_config_key(k): v for k, v in _files(old).items()}
    files_b = {_config_key(k): v for k, v in _files(new).items()}
    problems = 0
    for rel in sorted(files_a.keys() | files_b.keys()):
        a, b = files_a.get(rel), files_b.get(rel)
        if a is None or b is None:
            print(f"only in {'new' if a is None else 'old'}: {rel}")
            problems += 1
        elif _sha256(a) != _sha256(b):
            same = _same_data(a, b)
            print(f"{'same data' if same else 'DIFFERS'}: {rel}")
            problems += not same
    print(f"{len(files_a)} files in old, {len(files_b)} in new; "
          f"{problems} differ" + (" (none)" if not problems else ""))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    return 1 if compare(args.old, args.new) else 0


if __name__ == "__main__":
    sys.exit(main())
