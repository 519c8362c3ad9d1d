"""Every package a notebook imports is one its setup cell installs (on Colab, in a fresh kernel).

A notebook's setup cell installs the requirements of its pyproject extra; pip brings what those
depend on, and the kernel brings IPython and its own dependencies. An import outside all of that
runs on this machine (everything is installed here) and fails on Colab with ModuleNotFoundError.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from generator.assemble import NOTEBOOKS_DIR, _python_source, requirements_for
from generator.recipes import NOTEBOOKS

# Imported only inside a function that turns its absence into a clear message (an optional extra).
OPTIONAL_IMPORTS = {"sounddevice": "the live microphone (extra `live`): LiveAudioUnavailable says how to install it"}


def installed_with(requirements: list) -> set:
    """Distributions that installing ``requirements`` brings: them and, recursively, what they require
    (extras left out), as installed here."""
    seen, stack = set(), [Requirement(r).name for r in requirements]
    while stack:
        name = stack.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)  # extras left out; platform and Python conditions as here (Linux)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    return seen


def notebook_imports(path) -> dict:
    """``{top-level module: [True if imported inside a function, ...]}`` over a notebook's code cells."""
    notebook = nbformat.read(path, as_version=4)
    found = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python_source(cell.source))  # magics as the generator reads them
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


def missing_imports(imports: dict, extra: str) -> list:
    """The modules of ``imports`` (``notebook_imports``) that a notebook whose setup cell installs ``extra``
    would lack: not in the standard library, not installed with the extra or the kernel, not optional."""
    brought = installed_with(requirements_for(extra) + ["ipykernel"])
    distributions = md.packages_distributions()
    missing = []
    for module, nested in sorted(imports.items()):
        if module in sys.stdlib_module_names or module.startswith("_") or module == "google":  # google.colab
            continue
        if module in OPTIONAL_IMPORTS:  # installed or not: only where a function needs it
            if not all(nested):
                missing.append(f"{module} at the top level ({OPTIONAL_IMPORTS[module]}: import it inside a function)")
            continue
        dists = distributions.get(module, [])
        if not any(canonicalize_name(d) in brought for d in dists):
            missing.append(f"{module} (from {', '.join(dists) or 'no installed distribution'})")
    return missing


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_import_is_installed_by_the_setup_cell_or_the_kernel(name):
    imports = notebook_imports(NOTEBOOKS_DIR / f"{name}.ipynb")
    assert "numpy" in imports  # the parse found the real imports
    missing = missing_imports(imports, NOTEBOOKS[name])
    assert not missing, (
        f"{name} imports {missing}, which its setup cell does not install (extra {NOTEBOOKS[name]!r} in "
        "pyproject.toml): add them there"
    )


def test_the_check_names_what_an_extra_lacks(tmp_path):
    """A notebook importing plotly with the audiomae extra (which does not bring it) and sounddevice at the top
    level is refused; with the layers extra (plotly) and sounddevice inside a function, it passes."""
    cells = ["import numpy\nimport plotly.express as px\nimport sounddevice", "import json\nimport numpy"]
    path = tmp_path / "toy.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    assert missing_imports(notebook_imports(path), "audiomae") == [
        "plotly (from plotly)",
        f"sounddevice at the top level ({OPTIONAL_IMPORTS['sounddevice']}: import it inside a function)",
    ]
    cells[0] = "import numpy\nimport plotly.express as px\n\n\ndef record():\n    import sounddevice\n"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    assert missing_imports(notebook_imports(path), "layers") == []
