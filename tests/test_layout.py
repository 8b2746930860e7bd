"""The shape of the code: kernels stand alone, and imports sit at the top of modules.

- ``kernels/`` (installed as ``meltquench.kernels``) never imports the rest of meltquench.
- Only heavy or optional dependencies may be imported inside functions, where their cost or
  absence should only hit the code that needs them: :data:`LAZY`.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAZY = {"gpaw", "torch", "tblite", "matplotlib", "mpi4py", "chgnet", "sevenn"}
#: heavy modules of light packages: each takes about half a second to import (scipy.signal
#: pulls in scipy.stats; ase.calculators.vasp pulls in ase.vibrations and scipy.signal), and
#: only the XRD peak search and VASP need them, not every CLI start (``python -X importtime``)
LAZY_SUBMODULES = {"scipy.signal", "ase.calculators.vasp"}
#: meltquench modules that import a LAZY dependency at their top, and so may themselves be
#: imported lazily: MDPulay subclasses GPAW's Pulay mixer class, Stagnation GPAW's Criterion.
LAZY_OWN = {"mdpulay", "stagnation"}


def sources(folder):
    return sorted((ROOT / folder).rglob("*.py"))


def imported_modules(node):
    """(level, module name) of every module an Import/ImportFrom node names."""
    if isinstance(node, ast.Import):
        return [(0, alias.name) for alias in node.names]
    if node.level and node.module in LAZY_OWN:
        return [(0, "gpaw")]
    return [(node.level, node.module or "")]


def lazy(name):
    """Whether module ``name`` may be imported inside a function."""
    return name.split(".")[0] in LAZY or name in LAZY_SUBMODULES


def nested_imports(tree):
    """Import nodes inside a function or method body."""
    found = []
    for outer in ast.walk(tree):
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(outer):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append(node)
    return found


@pytest.mark.parametrize("path", sources("kernels"), ids=lambda p: p.name)
def test_kernels_never_import_meltquench(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for level, name in imported_modules(node):
                assert name.split(".")[0] != "meltquench", f"{path.name}:{node.lineno} imports meltquench"
                assert level <= 1, f"{path.name}:{node.lineno} imports from outside kernels/"


@pytest.mark.parametrize("path", sources("meltquench") + sources("kernels"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_heavy_dependencies_are_imported_inside_functions(path):
    tree = ast.parse(path.read_text())
    bad = [f"{path.relative_to(ROOT)}:{node.lineno}" for node in nested_imports(tree)
           if any(level > 0 or not lazy(name) for level, name in imported_modules(node))]
    assert not bad, "imports inside functions (move them to the top of the module): " + \
        ", ".join(bad)


def test_the_cli_starts_without_the_lazy_submodules():
    """``meltquench --help`` or a bad input (one line, exit 2) pays for none of them."""
    code = (f"import sys, meltquench.cli; print([m for m in {sorted(LAZY_SUBMODULES)!r} "
            "if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
