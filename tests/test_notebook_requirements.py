"""Every package a notebook imports is one its setup cell installs (on Colab, in a fresh kernel).

A notebook's setup cell installs the requirements of its pyproject extra; pip brings what those
depend on, and the kernel brings IPython and its own dependencies. An import outside all of that
runs on this machine (everything is installed here) and fails on Colab with ModuleNotFoundError.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement

from generator.assemble import NOTEBOOKS_DIR, requirements_for
from generator.recipes import NOTEBOOKS

# Imported only inside a function that turns its absence into a clear message (an optional extra).
OPTIONAL_IMPORTS = {"sounddevice": "the live microphone (extra `live`): LiveAudioUnavailable says how to install it"}


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_with(requirements: list) -> set:
    """Distributions that installing ``requirements`` brings: them and, recursively, what they require
    (extras left out), as installed here."""
    seen, stack = set(), [Requirement(r).name for r in requirements]
    while stack:
        name = stack.pop()
        if _key(name) in seen:
            continue
        seen.add(_key(name))
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or "extra" not in str(requirement.marker):
                stack.append(requirement.name)
    return seen


def notebook_imports(name: str) -> dict:
    """``{top-level module: [True if imported inside a function, ...]}`` over the notebook's code cells."""
    transform = TransformerManager().transform_cell
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    found = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(transform(cell.source))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            nested = any(f.lineno < node.lineno <= f.end_lineno for f in functions)
            for module in modules:
                found.setdefault(module.split(".")[0], []).append(nested)
    return found


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_import_is_installed_by_the_setup_cell_or_the_kernel(name):
    brought = installed_with(requirements_for(NOTEBOOKS[name]) + ["ipykernel"])
    distributions = md.packages_distributions()
    imports = notebook_imports(name)
    assert "numpy" in imports  # the parse found the real imports
    missing = []
    for module, nested in sorted(imports.items()):
        if module in sys.stdlib_module_names or module.startswith("_") or module == "google":  # google.colab
            continue
        dists = distributions.get(module)
        assert dists, f"{name}: imports {module!r}, which no installed distribution provides"
        if any(_key(d) in brought for d in dists):
            continue
        if module in OPTIONAL_IMPORTS:
            assert all(nested), f"{name}: {module} ({OPTIONAL_IMPORTS[module]}) must be imported inside a function"
            continue
        missing.append(f"{module} (from {', '.join(dists)})")
    assert not missing, (
        f"{name} imports {missing}, which its setup cell does not install (extra {NOTEBOOKS[name]!r} in "
        "pyproject.toml): add them there"
    )


def test_the_check_sees_a_package_the_extra_lacks():
    """The check can fail: plotly comes with the layers extra, not with audiomae's."""
    assert "plotly" in installed_with(requirements_for("layers"))
    assert "plotly" not in installed_with(requirements_for("audiomae"))
    assert "psutil" in installed_with(["ipykernel"])
