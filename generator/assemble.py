"""Assemble a recipe and the lib modules it imports into one self-contained notebook.

The pipeline: parse the recipe (a Jupytext percent-script), find its top-level
``from lib.<module> import <names>`` lines, resolve those modules recursively in
dependency order, inline each module's cells under a markdown heading (code collapsed),
drop the ``from lib...`` lines, prepend a setup cell that installs missing requirements,
and write a deterministic ``.ipynb`` with outputs stripped.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat

from generator.shake import INLINED_COMMENT, shake

ROOT = Path(__file__).resolve().parent.parent
LIB_DIR = ROOT / "lib"
RECIPES_DIR = ROOT / "generator" / "recipes"
NOTEBOOKS_DIR = ROOT / "notebooks"
PYPROJECT = ROOT / "pyproject.toml"
NBFORMAT_MINOR = 5


class AssemblyError(Exception):
    """A recipe or lib module cannot be inlined; the message says where and why."""


@dataclass
class Cell:
    kind: str  # "code" or "markdown"
    source: str
    tags: list = field(default_factory=list)


@dataclass
class Script:
    """A parsed percent-script: its cells and the lib modules its top-level imports name."""

    name: str
    path: Path
    cells: list
    lib_imports: list  # module names in order of first import


def _is_lib(module: str | None) -> bool:
    return module is not None and (module == "lib" or module.startswith("lib."))


def _is_internal(module: str | None) -> bool:
    return module is not None and (_is_lib(module) or module == "generator" or module.startswith("generator."))


def _parse(source: str) -> ast.Module:
    """``ast.parse``, retried on CPython 3.11's spurious "AST constructor recursion depth
    mismatch" SystemError (seen when other threads of the process run Python code)."""
    for attempt in range(3):
        try:
            return ast.parse(source)
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _python_source(cell_source: str) -> str:
    """The cell as plain Python: IPython magics and shell escapes transformed away."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(cell_source)
    except Exception:  # noqa: BLE001 - IPython missing or odd input: strip magics by hand
        return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def parse_script(path: Path, name: str | None = None, lib_dir: Path | None = None) -> Script:
    """Read a percent-script and check the form of its lib imports."""
    path = Path(path)
    notebook = jupytext.read(path, fmt="py:percent")
    cells, lib_imports = [], []
    for number, nb_cell in enumerate(notebook.cells, start=1):
        if nb_cell.cell_type not in ("code", "markdown"):
            continue
        source = nb_cell.source
        tags = list(nb_cell.metadata.get("tags", []))
        if nb_cell.cell_type == "code":
            source = _strip_lib_imports(path, number, source, lib_imports, lib_dir)
            if not source.strip():
                continue
        cells.append(Cell(nb_cell.cell_type, source, tags))
    return Script(name or path.stem, path, cells, lib_imports)


def _strip_lib_imports(
    path: Path, cell_number: int, source: str, lib_imports: list, lib_dir: Path | None = None
) -> str:
    """Replace top-level ``from lib.pkg.mod import y`` lines by a comment naming the module and
    symbols; reject every other form of lib import."""
    lib_dir = Path(lib_dir or LIB_DIR)
    try:
        tree = _parse(_python_source(source))
    except SyntaxError as error:
        raise AssemblyError(f"{path}: cell {cell_number}: syntax error: {error}") from None
    where = f"{path}: cell {cell_number}"
    replaced = {}  # first line -> (last line, comment)
    top_level = set(id(node) for node in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_internal(alias.name):
                    raise AssemblyError(
                        f"{where}, line {node.lineno}: 'import {alias.name}' cannot be inlined; "
                        f"write 'from {alias.name if alias.name.count('.') > 1 else 'lib.<family>.<module>'} "
                        "import <names>'"
                    )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssemblyError(
                    f"{where}, line {node.lineno}: relative imports cannot be inlined; "
                    "use 'from lib.<family>.<module> import <names>'"
                )
            if not _is_internal(node.module):
                continue
            if node.module in ("lib", "generator") or node.module.startswith("generator"):
                raise AssemblyError(
                    f"{where}, line {node.lineno}: 'from {node.module} import ...' cannot be "
                    "inlined; import names from a lib module: "
                    "'from lib.<family>.<module> import <names>'"
                )
            module = node.module.split(".", 1)[1]
            module_path = lib_dir / (module.replace(".", "/") + ".py")
            if not module_path.exists() and (lib_dir / module.replace(".", "/")).is_dir():
                raise AssemblyError(
                    f"{where}, line {node.lineno}: '{node.module}' is a package; import names "
                    f"from one of its modules: 'from {node.module}.<module> import <names>'"
                )
            if any(alias.name == "*" for alias in node.names):
                raise AssemblyError(
                    f"{where}, line {node.lineno}: 'from {node.module} import *' cannot be inlined; "
                    "name what you import"
                )
            renamed = [a for a in node.names if a.asname and a.asname != a.name]
            if renamed:
                raise AssemblyError(
                    f"{where}, line {node.lineno}: 'import {renamed[0].name} as "
                    f"{renamed[0].asname}' from lib cannot be inlined; use the name as it is"
                )
            if id(node) not in top_level:
                raise AssemblyError(
                    f"{where}, line {node.lineno}: 'from {node.module} import ...' must be at "
                    "the top level of a cell (not inside a function, class, if or try)"
                )
            if module not in lib_imports:
                lib_imports.append(module)
            names = ", ".join(alias.name for alias in node.names)
            comment = f"{INLINED_COMMENT}{names} (lib/{module.replace('.', '/')}.py)"
            replaced[node.lineno] = ((node.end_lineno or node.lineno), comment)
    if not replaced:
        return source
    lines = source.splitlines()
    out, skip_until = [], 0
    for number, line in enumerate(lines, start=1):
        if number in replaced:
            skip_until, comment = replaced[number]
            out.append(comment)
            continue
        if number <= skip_until:
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


def top_level_names(script: Script) -> dict:
    """Names a script defines at top level (functions, classes, assignments) -> first cell."""
    names = {}
    for number, cell in enumerate(script.cells, start=1):
        if cell.kind != "code":
            continue
        tree = _parse(_python_source(cell.source))
        for node in tree.body:
            found = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    found.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            for name in found:
                names.setdefault(name, number)
    return names


def resolve_modules(recipe: Script, lib_dir: Path | None = None) -> list:
    """The lib modules a recipe needs, dependencies first; errors on cycles and missing modules."""
    lib_dir = Path(lib_dir or LIB_DIR)
    order, state, cache = [], {}, {}

    def visit(module: str, chain: list):
        if state.get(module) == "done":
            return
        if state.get(module) == "active":
            cycle = chain[chain.index(module) :] + [module]
            raise AssemblyError("import cycle between lib modules: " + " -> ".join(f"lib.{m}" for m in cycle))
        path = lib_dir / (module.replace(".", "/") + ".py")
        if not path.exists():
            importer = f"lib.{chain[-1]}" if chain else recipe.path.name
            raise AssemblyError(f"{importer} imports lib.{module}, but {path} does not exist")
        state[module] = "active"
        script = cache.setdefault(module, parse_script(path, module, lib_dir))
        for dependency in script.lib_imports:
            visit(dependency, chain + [module])
        state[module] = "done"
        order.append(script)

    for module in recipe.lib_imports:
        visit(module, [])
    return order


def check_name_clashes(modules: list, recipe: Script) -> None:
    """Fail if two inlined modules (or a module and the recipe) define the same top-level name."""
    owner = {}
    for script in modules + [recipe]:
        label = module_label(script) if script is not recipe else str(recipe.path.name)
        for name, cell in top_level_names(script).items():
            if script is recipe and name in owner:
                raise AssemblyError(
                    f"{label}: cell {cell} redefines '{name}', already defined by {owner[name]}; "
                    "rename one of them (names must be unique across the inlined code)"
                )
            if name in owner:
                raise AssemblyError(
                    f"'{name}' is defined in both {owner[name]} and {label}; "
                    "names must be unique across lib (rename one)"
                )
            owner[name] = label


# --------------------------------------------------------------------------- requirements
def _load_pyproject(path: Path = PYPROJECT) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def requirements_for(extra: str, pyproject: Path = PYPROJECT) -> list:
    """Core dependencies plus those of ``extra`` from pyproject, as pip requirement strings."""
    project = _load_pyproject(pyproject)["project"]
    core = [
        r
        for r in project["dependencies"]
        if not r.startswith(("jupytext", "nbformat", "nbclient", "papermill", "ipykernel", "tomli"))
    ]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise AssemblyError(f"pyproject.toml has no extra {extra!r} (extras: {sorted(extras)})")
    seen, out = set(), []
    for requirement in core + extras[extra]:
        key = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        if key not in seen:
            seen.add(key)
            out.append(requirement)
    return out


SETUP_TEMPLATE = """\
# Setup: installs what this notebook needs when it runs on Colab or when a requirement is
# missing or too old; otherwise it does nothing. Requirements are pinned from pyproject.toml.
import importlib.metadata as _md
import sys as _sys

from packaging.requirements import Requirement as _Requirement

REQUIREMENTS = {requirements}
_ON_COLAB = "google.colab" in _sys.modules


def _unsatisfied(requirement):
    req = _Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return False
    try:
        installed = _md.version(req.name)
    except _md.PackageNotFoundError:
        return True
    # Keep an installed torch (Colab's GPU build); only a missing one is installed.
    return req.name != "torch" and not req.specifier.contains(installed, prereleases=True)


_missing = [r for r in REQUIREMENTS if _unsatisfied(r)]
if _missing:
    print("Installing:", ", ".join(_missing), "(Colab)" if _ON_COLAB else "")
    get_ipython().run_line_magic("pip", "install --quiet " + " ".join(repr(r) for r in _missing))
else:
    print("All requirements are installed.")
if __import__("os").environ.get("AUDIOLENS_TEXT_PROGRESS"):  # `audiolens run`: text bars, so the saved
    import tqdm.auto as _tqdm_auto  # notebook shows where each ended (a widget's saved text says 0%)
    import tqdm.std as _tqdm_std

    class _SavedBar(_tqdm_std.tqdm):  # a transient bar (leave=False) is left out: it would end as an empty box
        def __init__(self, *args, **kwargs):
            if kwargs.get("leave") is False:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    _tqdm_auto.tqdm, _tqdm_auto.trange = _SavedBar, lambda *args, **kwargs: _SavedBar(range(*args), **kwargs)"""


def setup_cell_source(extra: str) -> str:
    requirements = requirements_for(extra)
    body = "[\n" + "".join(f"    {r!r},\n" for r in requirements) + "]"
    return SETUP_TEMPLATE.format(requirements=body)


# --------------------------------------------------------------------------- notebook
def _cell_id(notebook: str, index: int, source: str) -> str:
    return f"c{index:03d}-" + hashlib.sha1(f"{notebook}\0{index}\0{source}".encode()).hexdigest()[:10]


def module_label(script: Script) -> str:
    """``lib/<family>/<module>.py`` for a lib module's script."""
    return "lib/" + script.name.replace(".", "/") + ".py"


def _without_title(markdown: str) -> str:
    """A module's first markdown cell without its ``# Title`` line (the section heading shows it)."""
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        if line.strip():
            if line.lstrip().startswith("#"):
                return "\n".join(lines[index + 1 :]).strip("\n")
            break
    return markdown.strip("\n")


def _cell_summary(source: str) -> str:
    """What a code cell defines, for its Colab form title: the first few top-level names."""
    try:
        tree = _parse(_python_source(source))
    except SyntaxError:
        return "code"
    names = [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
    ]
    defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)
    if not names and not defines:
        if all(isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.Expr)) for n in tree.body):
            return "imports and constants"
        names = [  # a table built by a loop (a registry): name what it fills
            target.id
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and not target.id.startswith("_")
        ]
    if not names:
        return "code"
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _left_out_note(label: str, names: list) -> str:
    """The line in a module's section that names the definitions this notebook does not carry."""
    if not names:
        return ""
    listed = ", ".join(f"`{n}`" for n in names)
    them = "it" if len(names) == 1 else "them"
    return f"*Not carried here (nothing in this notebook uses {them}; read {them} in `{label}`):* {listed}."


def _first_line(script: Script) -> str:
    for cell in script.cells:
        if cell.kind == "markdown":
            for line in cell.source.splitlines():
                text = line.strip().lstrip("#").strip()
                if text:
                    return text
    return script.name


def recipe_script(name: str, recipes_dir: Path | None = None, lib_dir: Path | None = None) -> Script:
    """The parsed recipe of notebook ``name``: its recipe file, or for a variant (``RECIPE_VARIANTS``) its
    base recipe with the variant's title, extra lib modules and parameter defaults."""
    from generator.recipes import NOTEBOOKS, RECIPE_VARIANTS

    recipes_dir = Path(recipes_dir or RECIPES_DIR)
    variant = RECIPE_VARIANTS.get(name) if not (recipes_dir / f"{name}.py").exists() else None
    recipe_path = recipes_dir / f"{variant['recipe'] if variant else name}.py"
    if not recipe_path.exists():
        raise AssemblyError(f"no recipe {recipe_path}; notebooks: {', '.join(sorted(NOTEBOOKS))}")
    recipe = parse_script(recipe_path, name, lib_dir)
    if variant is None:
        return recipe
    for module in variant["modules"]:
        if module not in recipe.lib_imports:
            recipe.lib_imports.append(module)
    title = next(c for c in recipe.cells if c.kind == "markdown")
    title.source = re.sub(r"^# .*$", f"# {variant['title']}", title.source, count=1, flags=re.M)
    title.source += "\n\n" + variant["intro"]
    params = next(c for c in recipe.cells if c.kind == "code")
    for key, value in variant["defaults"].items():
        params.source, found = re.subn(
            rf"^{re.escape(key)} = .*?(  #.*)?$",
            lambda m, key=key, value=value: f"{key} = {value!r}{m.group(1) or ''}",
            params.source,
            count=1,
            flags=re.M,
        )
        if not found:
            raise AssemblyError(f"RECIPE_VARIANTS[{name!r}] sets {key!r}, which is not a parameter of {recipe_path}")
    return recipe


def variant_for(name: str, parameters: dict) -> tuple:
    """``(notebook, parameters, note)``: the variant of ``name`` that ``parameters`` select (see ``RECIPE_VARIANTS``),
    with the base's defaults for the parameters the variant changes and the user did not set."""
    from generator.recipes import RECIPE_VARIANTS

    for variant_name, variant in RECIPE_VARIANTS.items():
        if variant["recipe"] != name:
            continue
        hits = [
            (key.strip(), rule["defaults"])
            for key, rule in variant["selects"].items()
            if parameters.get(key.strip()) in rule["values"]
        ]
        if hits:
            merged = {}
            if all(defaults == "base" for _key, defaults in hits):
                base = {p: d for p, d, _c in parameters_of(name)}
                merged = {k: ast.literal_eval(base[k]) for k in variant["defaults"] if k in base}
            merged.update(parameters)
            said = ", ".join(f"{key}={parameters[key]!r}" for key, _defaults in hits)
            return variant_name, merged, f"{said}: running {variant_name} (it carries that code)"
    return name, parameters, ""


def assemble(name: str, recipes_dir: Path | None = None, lib_dir: Path | None = None, extra: str | None = None):
    """Build the notebook ``name`` and return it (an nbformat NotebookNode)."""
    from generator.recipes import NOTEBOOKS

    recipes_dir = Path(recipes_dir or RECIPES_DIR)
    extra = extra or NOTEBOOKS.get(name)
    recipe = recipe_script(name, recipes_dir, lib_dir)
    recipe_path = recipe.path
    modules = resolve_modules(recipe, lib_dir)
    check_name_clashes(modules, recipe)

    code_cells = [c for c in recipe.cells if c.kind == "code"]
    if not code_cells or "parameters" not in code_cells[0].tags:
        raise AssemblyError(
            f'{recipe_path}: the first code cell must be tagged parameters (write it as  # %% tags=["parameters"])'
        )

    v4 = nbformat.v4
    first_code = recipe.cells.index(code_cells[0])
    params = recipe.cells[first_code]
    check = parameter_check_source(name, params.source)
    left_out, not_carried = shake(
        modules, [c.source for c in recipe.cells if c.kind == "code"] + [check or "", RUN_COMPLETE_CELL]
    )
    left_out = {module_label(modules[i]): names for i, names in left_out.items()}
    resolved = [module_label(m) for m in modules]
    modules = [m for i, m in enumerate(modules) if i not in not_carried]  # only imports were left

    cells = []
    sources = [f"`generator/recipes/{recipe_path.name}`"] + [f"`{module_label(m)}`" for m in modules]
    provenance = (
        "> **Generated file.** This notebook is built from "
        + ", ".join(sources)
        + ". Edit those files, then run `audiolens build`; changes made here are overwritten."
    )
    intro = [cell.source for cell in recipe.cells[:first_code] if cell.kind == "markdown"]
    cells.append(v4.new_markdown_cell("\n\n".join(intro + [provenance])))
    if extra:
        cells.append(
            v4.new_code_cell(
                "# @title Setup: install what is missing\n" + setup_cell_source(extra), metadata={"tags": ["setup"]}
            )
        )
    cells.append(
        v4.new_markdown_cell(
            "## Run\n\nSet the parameters in the next cell (or pass them with papermill / "
            "`audiolens run NAME -p KEY VALUE`), then run all cells."
        )
    )
    cells.append(v4.new_code_cell(params.source, metadata={"tags": ["parameters"]}))
    if check:
        cells.append(v4.new_code_cell(check, metadata={"tags": ["parameter-check"]}))

    if modules:
        listing = "\n".join(f"- `{module_label(m)}`: {_first_line(m)}" for m in modules)
        cells.append(
            v4.new_markdown_cell(
                "### Library code\n\nThe audiolens library modules this notebook uses, inlined so the notebook is "
                "self-contained, dependencies first. Each section is one module; its code is collapsed (expand "
                "a cell to read it).\n\n" + listing
            )
        )
    for module in modules:
        label = module_label(module)
        title = _first_line(module)
        intro_done = False
        note = _left_out_note(label, left_out.get(label, []))
        for cell in module.cells:
            if cell.kind == "markdown" and not intro_done:
                intro_done = True
                body = "\n\n".join(part for part in (_without_title(cell.source), note) if part)
                cells.append(
                    v4.new_markdown_cell(
                        f"#### {title} (`{label}`)" + (f"\n\n{body}" if body else ""), metadata={"tags": ["lib"]}
                    )
                )
            elif cell.kind == "markdown":
                # demote module headings below the notebook's own
                text = re.sub(r"^(#{1,4}) ", lambda m: "#" * min(6, len(m.group(1)) + 4) + " ", cell.source, flags=re.M)
                cells.append(v4.new_markdown_cell(text, metadata={"tags": ["lib"]}))
            else:
                if not intro_done:
                    intro_done = True
                    heading = f"#### {title} (`{label}`)" + (f"\n\n{note}" if note else "")
                    cells.append(v4.new_markdown_cell(heading, metadata={"tags": ["lib"]}))
                cells.append(
                    v4.new_code_cell(
                        f"# @title {label}: {_cell_summary(cell.source)}\n" + cell.source,
                        metadata={"cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["lib"]},
                    )
                )
    for cell in recipe.cells[first_code + 1 :]:
        if cell.kind == "markdown":
            cells.append(v4.new_markdown_cell(cell.source))
        else:
            metadata = {"tags": cell.tags} if cell.tags else {}
            cells.append(v4.new_code_cell(cell.source, metadata=metadata))

    if check and "_audiolens_run = " in check:
        cells.append(v4.new_code_cell(RUN_COMPLETE_CELL, metadata={"tags": ["run-record"]}))

    for index, cell in enumerate(cells):
        cell["id"] = _cell_id(name, index, cell.source)
    notebook = v4.new_notebook(cells=cells)
    notebook.nbformat_minor = NBFORMAT_MINOR
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        "audiolens": {
            "recipe": f"generator/recipes/{recipe_path.name}",
            "lib_modules": [module_label(m) for m in modules],
            "lib_modules_not_carried": [label for label in resolved if label not in set(map(module_label, modules))],
            "extra": extra,
        },
    }
    return notebook


def notebook_text(notebook) -> str:
    """Deterministic JSON text of a notebook (sorted keys, one-space indent, trailing newline)."""
    nbformat.validate(notebook)
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def build(names=None, out_dir: Path | None = None) -> list:
    """Regenerate notebooks; return the paths written (files whose text changed)."""
    from lib.core.atomic_io import atomic_write_text

    out_dir = Path(out_dir or NOTEBOOKS_DIR)
    written = []
    for name in names or available_recipes():
        if name not in available_recipes():
            raise AssemblyError(f"unknown notebook {name!r}; notebooks: {', '.join(available_recipes())}")
        text = notebook_text(assemble(name))
        path = out_dir / f"{name}.ipynb"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            written.append(path)
    return written


def available_recipes(recipes_dir: Path | None = None) -> list:
    """Notebook names: one per recipe file, plus the variants (``RECIPE_VARIANTS``) of those recipes."""
    from generator.recipes import RECIPE_VARIANTS

    stems = {p.stem for p in Path(recipes_dir or RECIPES_DIR).glob("*.py") if not p.name.startswith("_")}
    return sorted(stems | {name for name, v in RECIPE_VARIANTS.items() if v["recipe"] in stems})


def internal_imports_in_notebook(notebook) -> list:
    """``(cell index, line, statement)`` for every import of lib or generator in code cells."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = _parse(_python_source(cell.source))
        except SyntaxError:
            found.append((index, 0, "cell does not parse as Python"))
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(_is_internal(a.name) for a in node.names):
                found.append((index, node.lineno, "import " + ", ".join(a.name for a in node.names)))
            elif isinstance(node, ast.ImportFrom) and (node.level or _is_internal(node.module)):
                found.append((index, node.lineno, f"from {'.' * node.level}{node.module or ''} import ..."))
    return found


def check(out_dir: Path | None = None) -> list:
    """Problems with the committed notebooks: stale, missing, extra, or importing lib/generator."""
    out_dir = Path(out_dir or NOTEBOOKS_DIR)
    problems = []
    expected = set(available_recipes())
    for name in sorted(expected):
        path = Path(out_dir) / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"{path}: missing; run 'audiolens build {name}'")
            continue
        text = path.read_text(encoding="utf-8")
        fresh = notebook_text(assemble(name))
        if text != fresh:
            problems.append(
                f"{path}: differs from a fresh build of generator/recipes/{name}.py; "
                f"run 'audiolens build {name}' and commit"
            )
    for path in sorted(Path(out_dir).glob("*.ipynb")):
        if path.stem not in expected:
            problems.append(f"{path}: no recipe generator/recipes/{path.stem}.py builds it")
        notebook = nbformat.read(path, as_version=4)
        for index, line, statement in internal_imports_in_notebook(notebook):
            problems.append(f"{path}: cell {index}, line {line}: '{statement}' (notebooks must be self-contained)")
    return problems


def parameters_of(name: str, source: str | None = None) -> list:
    """``(name, default source, comment)`` for each assignment in a recipe's parameters cell."""
    if source is None:
        recipe = recipe_script(name)
        source = next(c for c in recipe.cells if c.kind == "code").source
    out = []
    lines = source.splitlines()
    for node in _parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and node.value is not None:
                line = lines[node.lineno - 1]
                comment = line.split("#", 1)[1].strip() if "#" in line[node.value.end_col_offset :] else ""
                out.append((target.id, ast.get_source_segment(source, node.value), comment))
    return out


_SPEC = re.compile(r"^\[([^\]]*)\]")


def parameter_schema(name: str, source: str | None = None) -> dict:
    """The declared schema of a notebook's parameters: default, spec (the comment's leading
    ``[...]``, see ``generator/parameter_check.py``) and help text, in the cell's order."""
    schema = {}
    for param, default_source, comment in parameters_of(name, source):
        try:
            default = ast.literal_eval(default_source)
        except (ValueError, SyntaxError):
            default = None
        match = _SPEC.match(comment)
        spec = f"[{match.group(1)}]" if match else ""
        if spec and "=" in spec:
            raise AssemblyError(
                f"generator/recipes/{name}.py: parameter {param}: '=' in a comment breaks "
                "papermill's parser; write ranges as [1..] or [0..1]"
            )
        schema[param] = {"default": default, "spec": spec, "help": comment[match.end() :].strip() if match else comment}
    return schema


def _parameter_check_code() -> str:
    text = (Path(__file__).parent / "parameter_check.py").read_text(encoding="utf-8")
    return text.split("# --- copied into notebooks from here on ---\n", 1)[1].strip("\n")


def parameter_check_source(name: str, params_source: str) -> str:
    """The generated cell that validates the parameters (and maps renamed ones) before any work."""
    from generator.recipes import RENAMED_PARAMETERS

    schema = parameter_schema(name, params_source)
    renamed = RENAMED_PARAMETERS.get(name, {})
    for old, new in renamed.items():
        if new not in schema:
            raise AssemblyError(f"RENAMED_PARAMETERS[{name!r}] maps {old!r} to {new!r}, which is not a parameter")
    entries = "".join(
        f"    {key!r}: {{'default': {entry['default']!r}, 'spec': {entry['spec']!r}}},\n"
        for key, entry in schema.items()
    )
    record = (
        "\n# This run's record: a fresh results.json with the run id, the parameters and status running\n"
        + "_audiolens_run = audiolens_start_run(\n"
        + f"    output_dir, {name!r}, {{k: globals()[k] for k in _audiolens_parameter_schema if k in globals()}}\n"
        + ")"
        if "output_dir" in schema
        else ""
    )
    return (
        "# @title Parameter check: types, ranges and choices declared in the parameters cell\n"
        "# Generated by audiolens build from the parameters cell's defaults and [spec] comments.\n"
        + _parameter_check_code()
        + "\n\n\n_audiolens_parameter_schema = {\n"
        + entries
        + "}\n"
        + f"_audiolens_renamed_parameters = {renamed!r}\n"
        + "audiolens_check_parameters(globals(), _audiolens_parameter_schema, _audiolens_renamed_parameters, "
        + f"{name!r})"
        + record
    )


RUN_COMPLETE_CELL = (
    "# @title Run record: every cell ran; mark this run complete in results.json\n"
    'audiolens_finish_run(_audiolens_run["output_dir"], _audiolens_run["id"], "complete")'
)
