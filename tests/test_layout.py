"""The shape of the code: kernels stand alone, and imports sit at the top of modules.

- ``kernels/`` (installed as ``meltquench.kernels``) never imports the rest of meltquench.
- Only heavy or optional dependencies may be imported inside functions, where their cost or
  absence should only hit the code that needs them: :data:`LAZY`.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAZY = {"gpaw", "torch", "tblite", "matplotlib", "mpi4py", "chgnet", "sevenn"}
#: meltquench modules that import a LAZY dependency at their top, and so may themselves be
#: imported lazily: MDPulay subclasses GPAW's Pulay mixer class, Stagnation GPAW's Criterion.
LAZY_OWN = {"mdpulay", "stagnation"}


def sources(folder):
    return sorted((ROOT / folder).rglob("*.py"))


def imported_modules(node):
    """(level, module root) of every module an Import/ImportFrom node names."""
    if isinstance(node, ast.Import):
        return [(0, alias.name.split(".")[0]) for alias in node.names]
    if node.level and node.module in LAZY_OWN:
        return [(0, "gpaw")]
    return [(node.level, (node.module or "").split(".")[0])]


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
            for level, root in imported_modules(node):
                assert root != "meltquench", f"{path.name}:{node.lineno} imports meltquench"
                assert level <= 1, f"{path.name}:{node.lineno} imports from outside kernels/"


@pytest.mark.parametrize("path", sources("meltquench") + sources("kernels"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_heavy_dependencies_are_imported_inside_functions(path):
    tree = ast.parse(path.read_text())
    bad = [f"{path.relative_to(ROOT)}:{node.lineno}" for node in nested_imports(tree)
           if any(level > 0 or root not in LAZY for level, root in imported_modules(node))]
    assert not bad, "imports inside functions (move them to the top of the module): " + \
        ", ".join(bad)
