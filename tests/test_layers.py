"""Layers of the package (docs/architecture.rst): algorithms import no Nipype, no
interfaces or workflows, and start no processes."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import cmbprep.algorithms

ALGORITHMS = Path(cmbprep.algorithms.__file__).parent
#: Names whose use starts (or manages) processes.
PROCESS_APIS = {"fork", "forkpty", "spawn", "Popen", "ProcessPoolExecutor", "Pool",
                "Process", "get_context", "run_in_fork"}
PROCESS_MODULES = {"multiprocessing", "subprocess", "concurrent.futures"}


def _algorithm_modules():
    return sorted(m.name for m in pkgutil.walk_packages([str(ALGORITHMS)],
                                                        "cmbprep.algorithms."))


def test_algorithms_import_no_nipype_interfaces_or_workflows():
    modules = _algorithm_modules()
    assert len(modules) > 20  # the walk found the package
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    if not name.endswith('__main__'):\n"
            "        importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] if m.startswith('nipype') else m for m in "
            "sys.modules if m.startswith(('nipype', 'cmbprep.interfaces', "
            "'cmbprep.workflows'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_algorithms_start_no_processes():
    offenders = []
    for path in sorted(ALGORITHMS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            else:
                continue
            bad = [n for n in names if n in PROCESS_MODULES or n in PROCESS_APIS]
            if bad:
                offenders.append(f"{path.relative_to(ALGORITHMS)}:{node.lineno} {bad}")
    assert offenders == []
