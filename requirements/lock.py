"""Write ``requirements/constraints.txt`` from the installed environment (``make lock``).

The lock file pins every distribution cmbprep[test,docs] pulls in (the requirements
of ``pyproject.toml`` and, from the installed metadata, theirs, recursively) at the
version installed in this environment; cmbprep itself and unrelated packages of the environment are left out.
``deepmriprep`` (installed with ``--no-deps`` for the atlas sources) is pinned too.
Use it with ``pip install -c requirements/constraints.txt -e ".[test,docs]"``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = "cmbprep"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
EXTRAS = ("test", "docs")
EXTRA_PINS = ("deepmriprep",)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _roots(pyproject: Path, extras) -> list[str]:
    """The requirements of ``pyproject.toml`` (dependencies plus the given extras)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def closure(pyproject: Path = PYPROJECT, extras=EXTRAS) -> dict[str, str]:
    """``{distribution name: installed version}`` of everything ``pyproject.toml``'s
    dependencies and ``extras`` need, read from the installed metadata."""
    env = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"}
    todo = [(line, ()) for line in _roots(pyproject, extras)]
    seen: dict[str, tuple[str, str]] = {}
    done = set()
    while todo:
        line, parent_extras = todo.pop()
        req = Requirement(line)
        if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in ("",) + parent_extras):
            continue
        key = (_norm(req.name), tuple(sorted(req.extras)))
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{req.name} is required but not installed: run `make install` "
                             "(or pip install -e \".[test,docs]\") first") from exc
        seen[_norm(req.name)] = (dist.metadata["Name"], dist.version)
        todo += [(sub, tuple(sorted(req.extras))) for sub in dist.requires or []]
    seen.pop(_norm(ROOT), None)
    return dict(seen.values())


def main(out: str = "requirements/constraints.txt") -> int:
    pins = closure()
    for name in EXTRA_PINS:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    lines = [
        "# cmbprep constraints (lock file), written by `make lock` (requirements/lock.py)",
        f"# from an environment with Python {sys.version.split()[0]}; used by the Dockerfile,",
        "# `make install` and CI: pip install -c requirements/constraints.txt -e \".[test,docs]\"",
    ]
    lines += [f"{name}=={pins[name]}" for name in sorted(pins, key=str.lower)]
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"{out}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
